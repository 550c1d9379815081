#!/usr/bin/env python3
"""Run an app image through the app contract (APP_CONTRACT.md) and print a table.

    make contract IMAGE=<reference>     (or: harness/contract.py <reference>)

Each service the bluegreen role starts (``bluegreen_services`` in
roles/bluegreen/defaults/main.yml: its name and command) is started the way
the role starts it: on the host's network, with APP_COLOR, APP_VERSION,
APP_HOST, APP_PORT and APP_DRAIN_TIMEOUT_S. Then, per service:

  user     no process of the container runs as root
  health   GET /health answers 200 with JSON status "ok" and the colour and
           version it was given, within --timeout seconds
  listen   it listens on APP_HOST:APP_PORT and on no other address
  metrics  GET /metrics is Prometheus text with the series the analysis,
           alerts and dashboards read, labelled as they read them
  drain    after SIGTERM with work in flight, /health answers 503 until the
           listener closes, and the process exits 0 within the stop grace
           (bluegreen_stop_grace_s). Without a way to put work in flight
           (--busy) the 503 cannot be observed: the check says so, and only
           the exit is judged.

Prints one row per check and service, and the plain line
``contract: N passed, N failed, N skipped``; exits 1 when a check failed.
Runs everything on 127.0.0.1 and removes its containers whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLE_DEFAULTS = ROOT / "roles" / "bluegreen" / "defaults" / "main.yml"
COLOR = "contract"
# Series the roles read (the analysis, the alert rules, the dashboards), with
# the labels they select on. APP_CONTRACT.md maps them to prom-client names.
REQUIRED_SERIES: dict[str, set[str]] = {
    "http_requests_total": {"route", "status_code"},
    "http_request_duration_seconds_bucket": {"route", "le"},
    "app_draining": set(),
}
# The reference app's way to put work in flight: a job that runs for 3 s.
REFERENCE_BUSY = 'backend=POST /api/jobs {"kind": "sleep", "params": {"seconds": 3}}'


@dataclass
class Row:
    check: str
    service: str
    result: str  # PASS, FAIL or SKIP
    detail: str


def role_defaults() -> dict[str, Any]:
    return dict(yaml.safe_load(ROLE_DEFAULTS.read_text()))


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: str | None = None) -> tuple[int, bytes]:
    """(status, body) of one request; (0, b"") when nothing answered."""
    data = body.encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=3) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (this network namespace)."""
    found: set[str] = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port or len(address) != size:
                continue
            raw = bytes.fromhex(address)
            if size == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def judge_health(status: int, body: bytes, version: str) -> str:
    """'' when /health's answer meets the contract, else what is wrong."""
    if status != 200:
        return f"status {status or 'none'}, expected 200"
    try:
        document = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:60]!r}"
    if not isinstance(document, dict):
        return "not a JSON object"
    wanted = {"status": "ok", "color": COLOR, "version": version}
    wrong = [
        f"{k}={document.get(k)!r} (expected {v!r})"
        for k, v in wanted.items()
        if document.get(k) != v
    ]
    return "; ".join(wrong)


def judge_metrics(status: int, body: bytes) -> str:
    """'' when /metrics has every required series with its labels, else what is missing."""
    from prometheus_client.parser import text_string_to_metric_families

    if status != 200:
        return f"GET /metrics answered {status or 'nothing'}"
    try:
        samples = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    except ValueError as exc:
        return f"not Prometheus text: {exc}"
    problems = []
    for name, labels in REQUIRED_SERIES.items():
        found = [s for s in samples if s.name == name]
        if not found:
            problems.append(f"no {name}")
        elif not any(labels <= set(s.labels) for s in found):
            problems.append(f"{name} without labels {sorted(labels)}")
    return "; ".join(problems)


class Service:
    """One service of the image, started as the bluegreen role starts it."""

    def __init__(self, image: str, name: str, command: list[str], version: str, drain_s: int):
        self.name, self.port = name, free_port()
        self.container = f"archibald-contract-{name}-{os.getpid()}"
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            "APP_COLOR": COLOR,
            "APP_VERSION": version,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            "APP_DRAIN_TIMEOUT_S": str(drain_s),
        }
        flags = [f"--env={k}={v}" for k, v in env.items()]
        docker("run", "-d", "--name", self.container, "--network", "host", *flags, image, *command)

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.container, check=False) == "true"

    def remove(self) -> None:
        docker("rm", "-f", self.container, check=False)

    def logs(self) -> str:
        return docker("logs", "--tail", "5", self.container, check=False)


def check_service(
    service: Service, version: str, timeout: float, grace: float, busy: str | None
) -> list[Row]:
    rows: list[Row] = []
    name = service.name

    def row(check: str, problem: str, ok_detail: str) -> None:
        rows.append(Row(check, name, "FAIL" if problem else "PASS", problem or ok_detail))

    started = time.monotonic()
    status, body = 0, b""
    while time.monotonic() - started < timeout:
        status, body = http("GET", f"{service.base}/health")
        if not judge_health(status, body, version) or (status and not service.running()):
            break
        if not service.running():
            break
        time.sleep(0.5)
    took = time.monotonic() - started
    health = judge_health(status, body, version)
    if status == 0 and not service.running():
        health = f"the container exited: {service.logs()[-200:]}"
    row("health", health, f"200 ok, colour and version as given, after {took:.1f} s")

    # docker top wants the pid column; the uid is the first.
    listing = docker("top", service.container, "-o", "uid,pid", check=False).splitlines()[1:]
    uids = [line.split()[0] for line in listing if line.split()]
    root = [u for u in uids if u == "0"]
    row(
        "user",
        (f"{len(root)} of {len(uids)} processes run as root (uid 0)" if uids else "no process seen")
        if root or not uids
        else "",
        f"processes run as uid {', '.join(sorted(set(uids)))}",
    )

    addresses = listening_addresses(service.port)
    wrong = sorted(addresses - {"127.0.0.1", "::1"})
    row(
        "listen",
        f"listens on {', '.join(wrong)} port {service.port}, not only on APP_HOST 127.0.0.1"
        if wrong
        else ("" if addresses else f"nothing listens on 127.0.0.1:{service.port} (APP_PORT)"),
        f"127.0.0.1:{service.port} only",
    )

    row(
        "metrics",
        judge_metrics(*http("GET", f"{service.base}/metrics")),
        "every series the roles read",
    )

    rows.append(drain(service, grace, busy))
    return rows


def drain(service: Service, grace: float, busy: str | None) -> Row:
    if busy:
        method, _, rest = busy.partition(" ")
        path, _, payload = rest.partition(" ")
        status, _ = http(method, f"{service.base}{path}", payload or None)
        if not 200 <= status < 300:
            return Row(
                "drain", service.name, "FAIL", f"the busy request {busy!r} answered {status}"
            )
        time.sleep(0.5)
    docker("kill", "--signal", "TERM", service.container, check=False)
    signalled = time.monotonic()
    seen: list[int] = []
    while service.running() and time.monotonic() - signalled < grace:
        seen.append(http("GET", f"{service.base}/health")[0])
        time.sleep(0.05)
    took = time.monotonic() - signalled
    if service.running():
        docker("kill", service.container, check=False)
        return Row(
            "drain",
            service.name,
            "FAIL",
            f"still running {grace:.0f} s after SIGTERM (the stop grace)",
        )
    code = docker("inspect", "-f", "{{.State.ExitCode}}", service.container, check=False)
    answered = [s for s in seen if s]
    if code != "0":
        return Row(
            "drain", service.name, "FAIL", f"exited {code} {took:.1f} s after SIGTERM, not 0"
        )
    if not busy:
        return Row(
            "drain",
            service.name,
            "SKIP",
            f"exit 0 {took:.1f} s after SIGTERM; 503 while draining not observable without "
            "work in flight (--busy)",
        )
    if 503 not in answered:
        return Row(
            "drain",
            service.name,
            "FAIL",
            f"/health answered {sorted(set(answered))} after SIGTERM, never 503",
        )
    if any(s != 503 for s in answered[answered.index(503) :]):
        return Row("drain", service.name, "FAIL", "/health answered 200 again after 503")
    return Row(
        "drain", service.name, "PASS", f"503 while draining, exit 0 {took:.1f} s after SIGTERM"
    )


def run_contract(
    image: str, version: str, timeout: float, grace: float, busy: dict[str, str]
) -> list[Row]:
    defaults = role_defaults()
    rows: list[Row] = []
    for name, spec in defaults["bluegreen_services"].items():
        command, drain_s = list(spec["command"]), int(defaults["bluegreen_drain_timeout_s"])
        try:
            service = Service(image, name, command, version, drain_s)
        except RuntimeError as exc:
            rows.append(Row("start", name, "FAIL", str(exc)))
            continue
        try:
            rows += check_service(service, version, timeout, grace, busy.get(name))
        finally:
            service.remove()
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'check':<8} {'service':<10} {'result':<6} detail"]
    lines += [f"{r.check:<8} {r.service:<10} {r.result:<6} {r.detail}" for r in rows]
    counts = {k: sum(r.result == k for r in rows) for k in ("PASS", "FAIL", "SKIP")}
    lines.append(
        f"contract: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", help="an image reference (pulled when not present)")
    parser.add_argument("--version", default="contract-check", help="the APP_VERSION given")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for /health to be ok")
    parser.add_argument("--grace", type=float, help="stop grace (default bluegreen_stop_grace_s)")
    parser.add_argument(
        "--busy",
        action="append",
        default=[],
        metavar="SERVICE=METHOD PATH [JSON]",
        help="a request that puts work in flight for a few seconds, for the drain check "
        f"(reference app: {REFERENCE_BUSY!r})",
    )
    parser.add_argument(
        "--reference", action="store_true", help=f"same as --busy {REFERENCE_BUSY!r}"
    )
    args = parser.parse_args(argv)
    busy_specs = args.busy + ([REFERENCE_BUSY] if args.reference else [])
    busy = dict(spec.split("=", 1) for spec in busy_specs)
    grace = (
        args.grace if args.grace is not None else float(role_defaults()["bluegreen_stop_grace_s"])
    )
    present = subprocess.run(
        ["docker", "image", "inspect", args.image], capture_output=True, check=False
    )
    if present.returncode != 0:
        print(f"contract: pulling {args.image}", flush=True)
        try:
            docker("pull", "-q", args.image, timeout=600)
        except RuntimeError as exc:
            print(f"contract: cannot check {args.image}: {exc}", file=sys.stderr)
            return 2
    started = time.monotonic()
    rows = run_contract(args.image, args.version, args.timeout, grace, busy)
    print(f"contract of {args.image} ({time.monotonic() - started:.0f} s):")
    print(table(rows))
    return 1 if any(r.result == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
