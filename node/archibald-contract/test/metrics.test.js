"use strict";
// The contract's series: names, types and labels; bounded route labels; the pool.
const assert = require("node:assert/strict");
const http = require("node:http");
const { test } = require("node:test");
const express = require("express");
const { createContract, UNMATCHED } = require("..");
const { request } = require("./support");

function service(options = {}) {
  const contract = createContract("backend", {
    env: { APP_COLOR: "green", APP_VERSION: "v7", APP_HOST: "127.0.0.1", APP_PORT: "1" },
    signals: false,
    log: () => undefined,
    exit: () => undefined,
    jobKinds: ["render"],
    ...options,
  });
  const app = express();
  contract.express.mount(app);
  const router = express.Router();
  router.get("/jobs/:id", (req, res) => res.json({ id: req.params.id }));
  app.use("/api", router);
  app.post("/api/jobs", (_req, res) => res.status(202).json({}));
  return { contract, app };
}

function listen(app) {
  return new Promise((resolve) => {
    const server = app.listen(0, "127.0.0.1", () => resolve(server));
  });
}

/** name -> {type, samples: [{name, labels}]} from Prometheus text. */
function parse(text) {
  const families = new Map();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) families.set(type[1], { type: type[2], samples: [] });
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (!sample) continue;
    const labels = {};
    for (const [, k, v] of (sample[2] ?? "").matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    const family = [...families.keys()].reverse().find((f) => sample[1] === f || sample[1].startsWith(f + "_"));
    families.get(family)?.samples.push({ name: sample[1], labels });
  }
  return families;
}

test("the metrics text has the contract's names, types and labels", async () => {
  const { app } = service();
  const server = await listen(app);
  const { port } = server.address();
  try {
    await request(port, "GET", "/api/jobs/42");
    await request(port, "POST", "/api/jobs");
    await request(port, "GET", "/no/such/page");
    const answer = await request(port, "GET", "/metrics");
    assert.equal(answer.status, 200);
    assert.match(answer.headers["content-type"], /^text\/plain;.*version=0\.0\.4/);
    const families = parse(answer.body);
    const expected = {
      http_requests_total: "counter",
      http_request_duration_seconds: "histogram",
      app_draining: "gauge",
      app_drain_duration_seconds: "gauge",
      active_operations: "gauge",
      job_queue_size: "gauge",
      job_processing_seconds: "histogram",
      jobs_total: "counter",
      app_info: "gauge",
      process_cpu_user_seconds_total: "counter",
      process_start_time_seconds: "gauge",
      worker_pool_size: "gauge",
      worker_pool_busy: "gauge",
      worker_pool_waiting: "gauge",
      worker_pool_waits_total: "counter",
      worker_pool_restarts_total: "counter",
      worker_pool_launch_failures_total: "counter",
    };
    for (const [name, type] of Object.entries(expected)) {
      assert.equal(families.get(name)?.type, type, `${name} is a ${type}`);
    }
    const requests = families.get("http_requests_total").samples;
    const labelled = (route, method, code) =>
      requests.some((s) => s.labels.route === route && s.labels.method === method && s.labels.status_code === code);
    assert.ok(labelled("/api/jobs/{id}", "GET", "200"), JSON.stringify(requests));
    assert.ok(labelled("/api/jobs", "POST", "202"));
    assert.ok(labelled(UNMATCHED, "GET", "404"));
    for (const sample of requests) assert.deepEqual(Object.keys(sample.labels).sort(), ["method", "route", "status_code"]);
    const buckets = families.get("http_request_duration_seconds").samples.filter((s) => s.name.endsWith("_bucket"));
    assert.ok(buckets.some((s) => s.labels.le === "2" && s.labels.route === "/api/jobs/{id}"), "a 2 s bucket (the p99 threshold)");
    const info = families.get("app_info").samples[0].labels;
    assert.deepEqual(info, { version: "v7", color: "green", service: "backend" });
    const jobs = families.get("jobs_total").samples.map((s) => `${s.labels.kind}/${s.labels.status}`).sort();
    assert.deepEqual(jobs, ["render/done", "render/failed", "render/requeued", "render/submitted"]);
    assert.match(answer.body, /^app_draining 0$/m);
  } finally {
    server.close();
  }
});

// A bound against a hang (drain.test.js says why it is generous), not a figure.
test("10,000 distinct raw paths give a bounded number of route labels", { timeout: 180000 }, async () => {
  const { contract, app } = service();
  const server = await listen(app);
  const { port } = server.address();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  try {
    const paths = [];
    for (let i = 0; i < 10000; i++) paths.push(i % 2 ? `/api/jobs/${i}-${Math.random()}` : `/scan/${i}/x?q=${i}`);
    for (let i = 0; i < paths.length; i += 500) {
      const statuses = await Promise.all(paths.slice(i, i + 500).map((p) => request(port, "GET", p, agent)));
      assert.ok(statuses.every((a) => a.status === 200 || a.status === 404));
    }
    const requests = parse(await contract.metrics.render()).get("http_requests_total").samples;
    const routes = new Set(requests.map((s) => s.labels.route));
    assert.deepEqual([...routes].sort(), ["/api/jobs/{id}", UNMATCHED]);
    const counted = (await contract.metrics.httpRequests.get()).values.reduce((sum, v) => sum + v.value, 0);
    assert.equal(counted, 10000);
    assert.ok(requests.length <= 2, `${requests.length} series`);
  } finally {
    agent.destroy();
    server.close();
  }
});
