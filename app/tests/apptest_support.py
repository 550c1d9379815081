"""Shared helpers: the backend in process, real server processes on free loopback
ports, bounded polling."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from archibald_app import api
from archibald_app.config import Config
from archibald_app.logs import EventLog
from archibald_app.metrics import Metrics
from archibald_app.queue import AsyncJobQueue, JobQueue
from archibald_app.runner import JobRunner
from archibald_app.service import SERVER_OPTIONS, ServiceState

APP_DIR = Path(__file__).resolve().parents[1]
T = TypeVar("T")
Scenario = Callable[[TestClient, ServiceState], Awaitable[None]]


def backend_config(tmp_path: Path, **overrides: Any) -> Config:
    """The test backend's settings: a database in `tmp_path`, colour blue, version v7."""
    base = Config(db_path=str(tmp_path / "j.db"), color="blue", version="v7")
    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def in_process_backend(
    cfg: Config, **client_options: Any
) -> AsyncIterator[tuple[TestClient, ServiceState]]:
    """The backend app behind aiohttp's test server; the runner is not started, so
    submitted jobs stay queued."""
    with open(os.devnull, "w") as devnull:
        log = EventLog(stream=devnull)
        metrics = Metrics(service="backend", color=cfg.color, version=cfg.version)
        state = ServiceState(cfg=cfg, service="backend", metrics=metrics, log=log, instance="t")
        queue = AsyncJobQueue(
            JobQueue(cfg.db_path, on_query=metrics.count_query, max_queued=cfg.max_queued_jobs)
        )
        runner = JobRunner(cfg, queue, metrics, log, "t")
        try:
            app = api.make_app(state, queue, runner)
            server = TestServer(app)
            await server.start_server(**SERVER_OPTIONS)  # TestServer() would drop them
            async with TestClient(server, **client_options) as client:
                yield client, state
        finally:
            await queue.close()


def run_backend(tmp_path: Path, scenario: Scenario, **overrides: Any) -> None:
    """Run `scenario` against the in-process backend, with `overrides` of its Config."""

    async def main() -> None:
        async with in_process_backend(backend_config(tmp_path, **overrides)) as (client, state):
            await scenario(client, state)

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(
    check: Callable[[], T | None], timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def http(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 5.0,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; returns (status, headers, decoded JSON body or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            status, headers, payload = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        status, headers, payload = exc.code, dict(exc.headers), exc.read()
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode()


class AppProcess:
    """`python -m archibald_app <service>` as a child process with its own port."""

    def __init__(self, service: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            "PYTHONPATH": str(APP_DIR),
            **env,
        }
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "archibald_app", service],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=APP_DIR,
        )

    def wait_healthy(self, timeout: float = 10.0) -> None:
        self.wait_health(200, timeout)

    def wait_health(self, status: int, timeout: float = 10.0) -> None:
        """Until /health answers `status` (503 for an image made unhealthy)."""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                return http("GET", self.base + "/health", timeout=1)[0] == status
            except OSError:
                return False

        poll(up, timeout, what=f"{self.base}/health answering {status}")

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        return http("GET", self.base + path)

    def post(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        return http("POST", self.base + path, body)

    def submit(self, kind: str, **params: Any) -> int:
        status, _, body = self.post("/api/jobs", {"kind": kind, "params": params})
        assert status == 202, body
        return int(body["id"])

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e.get("event") == name), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    """Start app processes; every one still running is killed at the end of the test."""
    started: list[AppProcess] = []

    def start(service: str = "backend", **env: str) -> AppProcess:
        env.setdefault("APP_DB_PATH", str(tmp_path / "jobs.sqlite3"))
        app = AppProcess(service, env, tmp_path / f"{service}-{len(started)}.log")
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()
