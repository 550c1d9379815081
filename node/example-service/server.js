// An example service on archibald-contract, run by harness/images/node-example:
//   node server.js backend|frontend
// backend:  POST /api/render {"seconds": N} -> 202 {"id"}; the job waits for a
//           browser from a pool of fake browsers (generic-pool, no Puppeteer)
//           and "renders" for N seconds (default 3). GET /api/jobs/:id -> its state.
// frontend: GET / -> a page.
// Both: /health, /metrics and the SIGTERM drain from the package. Jobs not
// finished within APP_DRAIN_TIMEOUT_S are handed back: here only counted and
// logged (the queue is in memory); a real backend puts them back in its queue.
"use strict";
const express = require("express");
const genericPool = require("generic-pool");
const { createContract, ConfigError } = require("archibald-contract");

const service = process.argv[2] || "backend";
if (!["backend", "frontend"].includes(service)) {
  console.error(`usage: server.js backend|frontend (not ${JSON.stringify(service)})`);
  process.exit(2);
}

let contract;
try {
  contract = createContract(service, {
    jobKinds: ["render"],
    handBack: (operations) => {
      for (const { info } of operations) {
        info.state = "requeued";
        contract.metrics.countJob("render", "requeued");
        contract.log("job_requeued", { job: info.id });
      }
    },
  });
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`configuration: ${error.message}`);
  process.exit(2);
}
const { metrics, lifecycle, log } = contract;
const app = express();
app.use(express.json({ limit: "16kb" }));
contract.express.mount(app);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

if (service === "frontend") {
  app.get("/", (_req, res) => {
    res.set("Cache-Control", "no-cache").type("html").send("<!doctype html><title>archibald</title><p>archibald</p>");
  });
} else {
  // Fake browsers: "launching" takes 50 ms; each has one context at a time.
  let launched = 0;
  const pool = genericPool.createPool(
    contract.pool.factory({
      create: async () => {
        await sleep(50);
        return { id: ++launched, connected: true };
      },
      destroy: async (browser) => {
        browser.connected = false;
      },
    }),
    { max: 2, min: 0 },
  );
  const browsers = contract.pool.watch(pool, { healthy: (browser) => browser.connected });
  lifecycle.onClose(() => pool.drain().then(() => pool.clear()));

  const jobs = new Map();
  let nextId = 1;
  let queued = 0;

  app.post("/api/render", (req, res) => {
    const seconds = Number((req.body && req.body.seconds) ?? 3);
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 30) {
      res.status(400).json({ error: "seconds must be a number from 0 to 30" });
      return;
    }
    const job = { id: String(nextId++), state: "queued", seconds };
    jobs.set(job.id, job);
    metrics.countJob("render", "submitted");
    metrics.jobQueueSize.set(++queued);
    lifecycle
      .track(
        () =>
          browsers.use(async () => {
            metrics.jobQueueSize.set(--queued);
            job.state = "running";
            const end = metrics.jobProcessing.startTimer({ kind: "render" });
            try {
              await sleep(seconds * 1000);
            } finally {
              end();
            }
          }),
        "job",
        job,
      )
      .then(
        () => {
          job.state = "done";
          metrics.countJob("render", "done");
        },
        (error) => {
          job.state = "failed";
          metrics.countJob("render", "failed");
          log("job_failed", { job: job.id, error: String(error) });
        },
      );
    res.status(202).json({ id: job.id, state: job.state });
  });

  app.get("/api/jobs/:id", (req, res) => {
    const job = jobs.get(req.params.id);
    if (job) res.json(job);
    else res.status(404).json({ error: "no such job" });
  });
}

contract.listen(app);
