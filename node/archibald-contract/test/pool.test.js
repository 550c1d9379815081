"use strict";
// Browser-pool instrumentation on a real generic-pool of fake browsers (no Puppeteer).
const assert = require("node:assert/strict");
const { test } = require("node:test");
const genericPool = require("generic-pool");
const { ContractMetrics, PoolMetrics } = require("..");

async function values(registry, name) {
  return (await registry.getSingleMetric(name).get()).values[0]?.value;
}

test("active browsers, waiting requests, restarts and launch failures are reported", async () => {
  const metrics = new ContractMetrics({ service: "backend", color: "blue", version: "v1", defaultMetrics: false });
  const poolMetrics = new PoolMetrics(metrics.registry);
  let launches = 0;
  const factory = {
    create: async () => {
      launches++;
      if (launches === 1) throw new Error("chrome did not start");
      return { id: launches, connected: true };
    },
    destroy: async (browser) => {
      browser.connected = false;
    },
  };
  const pool = genericPool.createPool(poolMetrics.factory(factory), { max: 2 });
  const browsers = poolMetrics.watch(pool, { healthy: (b) => b.connected });
  const { registry } = metrics;
  let release;
  const hold = new Promise((resolve) => (release = resolve));
  const jobs = [1, 2, 3].map(() => browsers.use(() => hold));
  // Two browsers busy, the third request waits (the first launch failed and was retried).
  for (let i = 0; i < 100 && (pool.borrowed < 2 || pool.pending < 1); i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await values(registry, "worker_pool_size"), 2);
  assert.equal(await values(registry, "worker_pool_busy"), 2);
  assert.equal(await values(registry, "worker_pool_waiting"), 1);
  assert.equal(await values(registry, "worker_pool_waits_total"), 1);
  assert.equal(await values(registry, "worker_pool_launch_failures_total"), 1);
  release();
  await Promise.all(jobs);
  // A job that fails, and one that leaves its browser disconnected: both replaced.
  await assert.rejects(browsers.use(async () => Promise.reject(new Error("page crashed"))), /page crashed/);
  await browsers.use(async (browser) => {
    browser.connected = false;
  });
  assert.equal(await values(registry, "worker_pool_restarts_total"), 2);
  assert.equal(await values(registry, "worker_pool_busy"), 0);
  await pool.drain();
  await pool.clear();
});
