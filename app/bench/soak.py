"""Restart soak: 10 SIGTERM restarts of the backend while jobs are submitted continuously.

Two backends (blue and green) share one database, as in a blue/green deploy;
they are restarted in turn, each restart being SIGTERM, wait for exit 0, start
again, wait healthy. A submitter thread posts short jobs all along to
whichever instance answers. At the end every accepted job must be done exactly
once: done in the database, one `job_finished` done event across all logs.
With --drain-timeout 0.5 the drains time out and the put-back path is soaked
too. Bounded: RESTARTS restarts, and at most 60 s to finish the backlog.
Loopback only. Usage, from the repository root:

    .venv/bin/python app/bench/soak.py [--restarts 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


class Backend:
    def __init__(self, color: str, db: str, workdir: str, drain_timeout: float) -> None:
        self.drain_timeout = drain_timeout
        self.color = color
        self.db = db
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ""

    def start(self) -> None:
        self.generation += 1
        self.log = f"{self.workdir}/{self.color}-{self.generation}.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(APP_DIR),
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            "APP_DB_PATH": self.db,
            "APP_COLOR": self.color,
            "APP_VERSION": f"soak{self.generation}",
            "APP_POLL_INTERVAL_S": "0.1",
            "APP_DRAIN_TIMEOUT_S": str(self.drain_timeout),
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "archibald_app", "backend"], env=env, stdout=out
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if request("GET", self.base + "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{self.color} did not become healthy")

    def stop(self) -> tuple[int, dict[str, Any]]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=90)
        events = [json.loads(line) for line in Path(self.log).read_text().splitlines()]
        finished = next(e for e in events if e["event"] == "drain_finished")
        return code, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="jobs submitted per second")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="APP_DRAIN_TIMEOUT_S; below 1.5 s, drains time out and put jobs back",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        db = f"{workdir}/jobs.sqlite3"
        backends = [Backend(c, db, workdir, args.drain_timeout) for c in ("blue", "green")]
        for b in backends:
            b.start()
        accepted: list[int] = []
        refused = 0
        stop = threading.Event()

        def submit() -> None:
            nonlocal refused
            rng = random.Random(7)
            while not stop.is_set():
                job = {"kind": "sleep", "params": {"seconds": rng.uniform(0.1, 1.5), "cpu": 0.05}}
                for b in rng.sample(backends, 2):
                    try:
                        status, body = request("POST", b.base + "/api/jobs", job)
                    except OSError:
                        status, body = 0, None
                    if status == 202:
                        accepted.append(int(body["id"]))
                        break
                    refused += 1
                time.sleep(1 / args.rate)

        submitter = threading.Thread(target=submit, daemon=True)
        submitter.start()
        drains: list[tuple[str, int, float, int, int]] = []
        started = time.monotonic()
        for n in range(args.restarts):
            time.sleep(1.0)
            b = backends[n % 2]
            code, finished = b.stop()
            drains.append(
                (
                    b.color,
                    code,
                    finished["duration_s"],
                    finished["jobs_completed"],
                    finished["jobs_requeued"],
                )
            )
            print(
                f"restart {n + 1:2}: {b.color:5} exit={code} drain={finished['duration_s']:.2f}s"
                f" completed={finished['jobs_completed']} requeued={finished['jobs_requeued']}",
                flush=True,
            )
            b.start()
        stop.set()
        submitter.join(timeout=10)
        soak_s = time.monotonic() - started

        con = sqlite3.connect(db, timeout=15)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = con.execute("SELECT COUNT(*) FROM jobs WHERE status != 'done'").fetchone()[0]
            if left == 0:
                break
            time.sleep(0.2)
        rows = {r[0]: r[1:] for r in con.execute("SELECT id, status, runs FROM jobs")}
        for b in backends:
            b.stop()
        # Completions from the logs of every process: each job must be done exactly once.
        done_events: dict[int, int] = {}
        for log in Path(workdir).glob("*.log"):
            for line in log.read_text().splitlines():
                event = json.loads(line)
                if event["event"] == "job_finished" and event["status"] == "done":
                    done_events[event["job_id"]] = done_events.get(event["job_id"], 0) + 1
    lost = [i for i in accepted if i not in rows or rows[i][0] != "done"]
    twice = [i for i in accepted if done_events.get(i, 0) > 1]
    restarted = [i for i in accepted if i in rows and rows[i][1] > 1]
    durations = [d[2] for d in drains]
    print()
    print(
        f"restarts: {len(drains)} in {soak_s:.1f} s, exit codes: {sorted({d[1] for d in drains})}"
    )
    print(f"jobs accepted: {len(accepted)}, submissions refused and retried: {refused}")
    print(f"jobs lost: {len(lost)}  jobs run twice (done twice): {len(twice)}")
    print(f"jobs interrupted by a drain and run again elsewhere: {len(restarted)}")
    print(
        f"drain time: min {min(durations):.2f} s, max {max(durations):.2f} s,"
        f" mean {sum(durations) / len(durations):.2f} s;"
        f" jobs requeued: {sum(d[4] for d in drains)}"
    )
    if lost or twice or any(d[1] != 0 for d in drains):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
