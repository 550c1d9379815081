"use strict";
// The browser-pool instrumentation with real browsers: Debian's chromium driven by
// puppeteer-core (which downloads no browser) in a generic-pool, as the real backend
// runs its Puppeteer pool. Runs where chromium is installed (system-packages.txt's
// unit group, so CI here and GitHub's unit job); elsewhere it is skipped and says why.
const assert = require("node:assert/strict");
const fs = require("node:fs");
const { test } = require("node:test");
const genericPool = require("generic-pool");
const { ContractMetrics, PoolMetrics } = require("..");

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const missing = fs.existsSync(CHROMIUM)
  ? false
  : `real-browser check not run: no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;

async function value(registry, name) {
  return (await registry.getSingleMetric(name).get()).values[0]?.value;
}

test("real browsers in the pool: three renders on two browsers, a crashed browser replaced", { skip: missing, timeout: 120000 }, async () => {
  const puppeteer = require("puppeteer-core");
  const metrics = new ContractMetrics({ service: "backend", color: "blue", version: "v1", defaultMetrics: false });
  const poolMetrics = new PoolMetrics(metrics.registry);
  const factory = {
    create: () =>
      puppeteer.launch({
        executablePath: CHROMIUM,
        headless: true,
        // As root in a container: no user namespaces for chromium's sandbox, a small /dev/shm.
        args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
      }),
    destroy: (browser) => browser.close().catch(() => undefined),
  };
  const pool = genericPool.createPool(poolMetrics.factory(factory), { max: 2 });
  const browsers = poolMetrics.watch(pool, { healthy: (browser) => browser.connected });
  const render = (n) =>
    browsers.use(async (browser) => {
      const page = await browser.newPage();
      try {
        await page.goto(`data:text/html,<title>job ${n}</title><p id="n">${n * n}</p>`);
        return await page.$eval("#n", (element) => element.textContent);
      } finally {
        await page.close();
      }
    });
  const started = Date.now();
  try {
    assert.deepEqual(await Promise.all([1, 2, 3].map(render)), ["1", "4", "9"]);
    const { registry } = metrics;
    assert.equal(await value(registry, "worker_pool_size"), 2);
    assert.equal(await value(registry, "worker_pool_busy"), 0);
    assert.ok((await value(registry, "worker_pool_waits_total")) >= 1, "the third render waited");
    // A browser that dies during a job (its process killed, as the OOM killer would):
    // the job fails, the browser is replaced, the next render works.
    await assert.rejects(
      browsers.use(async (browser) => {
        const gone = new Promise((resolve) => browser.once("disconnected", resolve));
        browser.process().kill("SIGKILL");
        await gone;
        await browser.newPage();
      }),
    );
    assert.equal(await render(5), "25");
    assert.equal(await value(registry, "worker_pool_restarts_total"), 1);
    assert.equal(await value(registry, "worker_pool_launch_failures_total"), 0);
    console.log(`real-browser check ran: ${CHROMIUM}, 4 renders and a crash in ${Date.now() - started} ms`);
  } finally {
    await pool.drain();
    await pool.clear();
  }
});
