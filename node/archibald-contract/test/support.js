"use strict";
// Helpers for the tests: a child process running fixtures/server.js, HTTP on loopback.
const { spawn } = require("node:child_process");
const http = require("node:http");
const net = require("node:net");
const path = require("node:path");

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** (status, headers, body) of one request; status 0 when nothing answered. */
function request(port, method, pathname, agent = false) {
  return new Promise((resolve) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: pathname, agent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
      res.on("error", () => resolve({ status: 0, headers: {}, body }));
    });
    req.on("error", () => resolve({ status: 0, headers: {}, body: "" }));
    req.end();
  });
}

/** Poll `check` every 20 ms until it returns a truthy value or `ms` pass. */
async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Start the fixture service; resolves once /health answers 200. */
async function startService(env = {}) {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(__dirname, "fixtures", "server.js")], {
    env: { ...process.env, APP_COLOR: "blue", APP_VERSION: "t1", APP_HOST: "127.0.0.1", APP_PORT: String(port), ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const events = [];
  let buffered = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop();
    for (const line of lines) if (line) events.push(JSON.parse(line));
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal, at: Date.now() })));
  try {
    await until(async () => (await request(port, "GET", "/health")).status === 200, 30000, "/health 200");
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return { port, child, events, exited };
}

module.exports = { freePort, request, until, startService };
