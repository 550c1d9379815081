"use strict";
// The drain in a real child process (APP_CONTRACT.md, "draining").
const assert = require("node:assert/strict");
const { test } = require("node:test");
const { request, until, startService } = require("./support");

// Bounds against a hang, not figures: on Debian 12's Node 18 beside a CI run
// the ten restarts took 28 s and 10,000 requests over 20 s.
const BOUND = { timeout: 60000 };

test("SIGTERM with five operations in flight: all complete, 503 while draining, exit 0", BOUND, async () => {
  const service = await startService({ APP_DRAIN_TIMEOUT_S: "10" });
  const { port, child } = service;
  const inFlight = [1, 2, 3, 4, 5].map(() => request(port, "POST", "/slow?ms=1500"));
  // Every request has reached the server: active_operations counts them (plus the scrape).
  await until(async () => /^active_operations 6$/m.test((await request(port, "GET", "/metrics")).body), 3000, "5 in flight");
  const signalled = Date.now();
  child.kill("SIGTERM");
  await until(async () => (await request(port, "GET", "/health")).status === 503, 1000, "/health 503");
  const health = JSON.parse((await request(port, "GET", "/health")).body);
  assert.equal(health.status, "draining");
  const refused = await request(port, "POST", "/slow?ms=10");
  assert.equal(refused.status, 503);
  assert.equal(refused.headers["retry-after"], "5");
  const metrics = (await request(port, "GET", "/metrics")).body;
  assert.match(metrics, /^app_draining 1$/m);
  const answers = await Promise.all(inFlight);
  assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200, 200]);
  const { code, at } = await service.exited;
  assert.equal(code, 0);
  assert.ok(at - signalled < 10000, `exited ${at - signalled} ms after SIGTERM, under the 10 s limit`);
  const names = service.events.map((e) => e.event);
  assert.ok(names.includes("drain_started") && names.includes("drain_finished"), names.join(","));
  const finished = service.events.find((e) => e.event === "drain_finished");
  assert.equal(finished.handed_back, 0);
  assert.equal(finished.completed, 5);
  assert.equal(service.events.find((e) => e.event === "drain_started").in_flight, 5);
});

test("the limit reached: unfinished work is handed back and the process exits 0", BOUND, async () => {
  const service = await startService({ APP_DRAIN_TIMEOUT_S: "1" });
  const jobs = [];
  for (let i = 0; i < 3; i++) jobs.push(JSON.parse((await request(service.port, "POST", "/jobs?ms=30000")).body).job);
  const quick = JSON.parse((await request(service.port, "POST", "/jobs?ms=200")).body).job;
  const signalled = Date.now();
  service.child.kill("SIGTERM");
  const { code, at } = await service.exited;
  assert.equal(code, 0);
  const took = at - signalled;
  assert.ok(took >= 1000 && took < 4000, `exited ${took} ms after SIGTERM with a 1 s limit`);
  const requeued = service.events.filter((e) => e.event === "job_requeued").map((e) => e.job);
  assert.deepEqual(requeued.sort(), jobs.sort());
  assert.ok(service.events.some((e) => e.event === "job_done" && e.job === quick), "the short job finished");
  const finished = service.events.find((e) => e.event === "drain_finished");
  assert.equal(finished.handed_back, 3);
  assert.equal(finished.reason, "timeout");
  assert.ok(service.events.some((e) => e.event === "operations_handed_back" && e.count === 3));
});

test("a second SIGTERM ends the drain at once", BOUND, async () => {
  const service = await startService({ APP_DRAIN_TIMEOUT_S: "60" });
  await request(service.port, "POST", "/jobs?ms=30000");
  service.child.kill("SIGTERM");
  await until(async () => (await request(service.port, "GET", "/health")).status === 503, 1000, "/health 503");
  const second = Date.now();
  service.child.kill("SIGTERM");
  const { code, at } = await service.exited;
  assert.equal(code, 0);
  assert.ok(at - second < 3000, `exited ${at - second} ms after the second SIGTERM`);
  const names = service.events.map((e) => e.event);
  assert.ok(names.includes("drain_interrupted"), names.join(","));
  assert.equal(service.events.find((e) => e.event === "drain_finished").reason, "second-signal");
  assert.equal(service.events.filter((e) => e.event === "job_requeued").length, 1);
});

test("ten restarts under load: no operation interrupted", { timeout: 180000 }, async () => {
  for (let round = 0; round < 10; round++) {
    const service = await startService({ APP_DRAIN_TIMEOUT_S: "10" });
    const inFlight = [1, 2, 3].map(() => request(service.port, "POST", "/slow?ms=300"));
    await until(async () => /^active_operations 4$/m.test((await request(service.port, "GET", "/metrics")).body), 2000, "3 in flight");
    service.child.kill("SIGTERM");
    const answers = await Promise.all(inFlight);
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 200], `round ${round + 1}`);
    const { code } = await service.exited;
    assert.equal(code, 0, `round ${round + 1}`);
    assert.equal(service.events.find((e) => e.event === "drain_finished").handed_back, 0);
  }
});
