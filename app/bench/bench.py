"""Throughput and p99 of GET /health and POST /api/jobs, metrics middleware on and off.

Prints figures; it is not a test. Loopback only (127.0.0.1), bounded in time:
every hey run lasts DURATION seconds. Usage, from the repository root:

    .venv/bin/python app/bench/bench.py [--duration 5] [--rounds 3]

The servers are pinned to CPU 0 and hey to CPU 1 when taskset exists, so they
do not fight over one core. Both servers (metrics on, metrics off) run side by
side, only one is loaded at a time, and the order alternates from round to
round; the figures reported are medians over the rounds. Throughput on a
shared machine is noisy, so the server's CPU time per request (from /proc) is
printed too: it is the steadier measure of what the metrics middleware costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parents[1]
HEY = shutil.which("hey") or "/usr/bin/hey"
TASKSET = shutil.which("taskset")
JOB = json.dumps({"kind": "sleep", "params": {"seconds": 0, "cpu": 0}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return [TASKSET, "-c", str(cpu), *argv] if TASKSET and (os.cpu_count() or 1) > 1 else argv


def start_server(metrics: bool, db_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(APP_DIR),
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(port),
        "APP_DB_PATH": str(Path(db_dir) / f"bench-{port}.sqlite3"),
        "APP_METRICS_ENABLED": "true" if metrics else "false",
        "APP_DRAIN_TIMEOUT_S": "10",
    }
    proc = subprocess.Popen(
        pinned(0, [sys.executable, "-m", "archibald_app", "backend"]),
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as answer:
                if answer.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not become healthy in 10 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hey(url: str, duration: float, concurrency: int, post: bool) -> tuple[float, float, str]:
    argv = [HEY, "-z", f"{duration}s", "-c", str(concurrency)]
    if post:
        argv += ["-m", "POST", "-T", "application/json", "-d", JOB]
    out = subprocess.run(
        pinned(1, [*argv, url]), capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = float(re.search(r"99% in ([\d.]+) secs", out).group(1))  # type: ignore[union-attr]
    codes = ", ".join(f"{n}x{c}" for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    return rps, p99 * 1000, codes


def wait_backlog(base: str, timeout: float = 60.0) -> None:
    """Let the workers finish the jobs a POST run queued, so they do not load the next run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(base + "/api/jobs?status=queued&limit=1", timeout=5) as r:
            if not json.loads(r.read())["jobs"]:
                return
        time.sleep(0.2)


def record_cost_us(n: int = 200_000) -> float:
    """CPU cost of the metrics middleware's work for one request, measured in process.

    Steady where throughput is not (a loaded machine): what `record` adds per
    request (label lookup, histogram, counter), to set beside CPU per request.
    """
    sys.path.insert(0, str(APP_DIR))
    from aiohttp.web_urldispatcher import UrlMappingMatchInfo
    from archibald_app.config import Config
    from archibald_app.logs import EventLog
    from archibald_app.metrics import Metrics
    from archibald_app.service import ServiceState, _recorder, make_app

    cfg = Config()
    metrics = Metrics(service="backend", color="dev", version="dev")
    state = ServiceState(cfg=cfg, service="backend", metrics=metrics, log=EventLog(), instance="b")
    app = make_app(state)

    resource = next(r for r in app.router.resources() if r.canonical == "/health")
    route = next(iter(resource))
    request: Any = types.SimpleNamespace(method="GET", match_info=UrlMappingMatchInfo({}, route))
    record = _recorder(state)
    start = time.process_time()
    for _ in range(n):
        record(request, 200, time.perf_counter())
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per hey run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cases = [("GET /health", "/health", False, 32), ("POST /api/jobs", "/api/jobs", True, 16)]
    results: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as db_dir:
        servers = {metrics: start_server(metrics, db_dir) for metrics in (True, False)}
        try:
            for n in range(args.rounds):
                for name, path, post, conc in cases:
                    # Alternate which mode goes first, so drift in machine load evens out.
                    for metrics in (True, False) if n % 2 == 0 else (False, True):
                        proc, base = servers[metrics]
                        cpu_before = cpu_seconds(proc.pid)
                        rps, p99, codes = hey(base + path, args.duration, conc, post)
                        if post:
                            wait_backlog(base)
                        served = rps * args.duration
                        cpu_us = (cpu_seconds(proc.pid) - cpu_before) / served * 1e6
                        results.setdefault((name, metrics), []).append((rps, p99, cpu_us))
                        print(
                            f"  run: {name:15} metrics={'on ' if metrics else 'off'}"
                            f" {rps:8.0f} req/s  p99 {p99:6.1f} ms"
                            f"  server CPU {cpu_us:5.0f} us/req  {codes}",
                            flush=True,
                        )
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    print()
    print(f"{'endpoint':16} {'metrics':8} {'req/s':>8} {'p99 ms':>8} {'CPU us/req':>11}")
    for name, *_ in cases:
        figures = {}
        for metrics in (True, False):
            runs = results[(name, metrics)]
            rps = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            cpu = statistics.median(r[2] for r in runs)
            figures[metrics] = (rps, cpu)
            print(f"{name:16} {'on' if metrics else 'off':8} {rps:8.0f} {p99:8.1f} {cpu:11.0f}")
        (on_rps, on_cpu), (off_rps, off_cpu) = figures[True], figures[False]
        print(
            f"{name:16} metrics cost: {100 * (off_rps - on_rps) / off_rps:+.1f} % throughput,"
            f" {100 * (on_cpu - off_cpu) / off_cpu:+.1f} % server CPU per request (medians)"
        )
    cost = record_cost_us()
    off_cpu = statistics.median(r[2] for r in results[("GET /health", False)])
    print(
        f"metrics recording, measured in process: {cost:.1f} us per request"
        f" = {100 * cost / off_cpu:.1f} % of the {off_cpu:.0f} us CPU of a GET /health"
        " without metrics"
    )
    print(f"load average after the runs: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
