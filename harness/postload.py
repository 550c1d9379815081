"""Counted write load: POST /api/jobs at a fixed rate, every outcome counted.

hey cannot measure what a release does to writes: Go's HTTP client sends an
idempotent request again, without saying so, when a reused keep-alive
connection is closed under it, and it never does that for a POST. This client
retries nothing unless told to, so the number it prints is the number a
release makes API clients see.

Each ``Writer`` offers ``rate`` submissions per second (open loop: a slow
answer does not slow the offer down) over ``connections`` pooled HTTP/1.1
keep-alive connections, each submission with its own Idempotency-Key.

* ``retry=False``: one attempt. A submission that gets no answer, or a status
  other than 202, is a failure. This is the raw figure for HTTP/1.1.
* ``retry=True``: the policy app/README.md gives API clients: a submission
  that got no answer, or any 5xx, is sent again with the same Idempotency-Key,
  at most ``attempts`` times with a short backoff. The app
  answers a repeated key with the job it already created, so a retry never
  makes a second job.

What the client library itself does, stated rather than hidden: httpcore
never resends a request whose bytes were written; before a request it drops a
pooled connection the server has already closed. HTTP/2 is measured with
``hey -h2``, not here: httpcore 1.0 fails every stream still open when a
GOAWAY arrives, also those the GOAWAY says the server will finish (nginx's old
workers do finish them), so it would count answers that were on their way as
lost.

``WriteLoad`` runs writers on an event loop in a thread (small loads, the
unit tests); ``start_process``/``finish_process`` run one writer in a process
of its own (``python -m harness.postload``), so that under load it competes
with nothing in the test's interpreter. ``summary`` and ``phase_latency`` turn
the outcomes into the printed figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# After the load stops, how long answers on their way are awaited.
STOP_GRACE_S = 60.0


@dataclass
class Outcome:
    """One submission: what the client finally saw, after any retries."""

    key: str
    started: float  # time.monotonic() when the first attempt was sent
    seconds: float  # to the final answer (or the final failure)
    status: int  # 0: no HTTP answer at all
    job_id: str | None
    attempts: int
    replayed: bool  # the app answered with a job this key had already made
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 202 and self.job_id is not None


@dataclass
class Writer:
    name: str
    url: str
    rate: float
    retry: bool = False
    connections: int = 8
    attempts: int = 4
    host: str = "localhost"
    body: dict[str, Any] = field(
        default_factory=lambda: {"kind": "sleep", "params": {"seconds": 0.01, "cpu": 0}}
    )
    # Keys are "<prefix>-<n>", sent in double quotes as the IETF draft writes them.
    key_prefix: str = field(default_factory=lambda: f"load-{uuid.uuid4().hex[:12]}")
    outcomes: list[Outcome] = field(default_factory=list)

    def client(self, verify: ssl.SSLContext | bool) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self.connections,
            max_keepalive_connections=self.connections,
            keepalive_expiry=120,
        )
        return httpx.AsyncClient(
            verify=verify,
            limits=limits,
            timeout=httpx.Timeout(10.0),
        )

    async def run(self, stop: asyncio.Event, seconds: float, verify: ssl.SSLContext | bool) -> None:
        """Offer `rate` submissions/s until `stop` is set or `seconds` have passed."""
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        async with self.client(verify) as client:
            began = loop.time()
            sent = 0
            while not stop.is_set() and loop.time() - began < seconds:
                due = began + sent / self.rate
                delay = due - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                task = asyncio.create_task(self._submit(client, f"{self.key_prefix}-{sent}"))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            # Every submission sent gets its outcome: wait for the answers on their
            # way (each attempt is bounded by the client's timeouts), and count
            # any still unanswered after that as failed, never as not sent.
            if pending:
                await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for task in list(pending):
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _submit(self, client: httpx.AsyncClient, key: str) -> None:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f'"{key}"',
            "Host": self.host,
        }
        content = json.dumps(self.body).encode()
        started = time.monotonic()
        status, job_id, replayed, error = 0, None, False, ""
        attempt = 0
        try:
            while attempt < (self.attempts if self.retry else 1):
                attempt += 1
                try:
                    answer = await client.post(self.url, content=content, headers=headers)
                except httpx.TransportError as exc:
                    status, job_id, error = 0, None, f"{type(exc).__name__}: {exc}"
                else:
                    status, error = answer.status_code, ""
                    replayed = answer.headers.get("Idempotent-Replayed") == "true"
                    job_id = _job_id(answer) if status == 202 else None
                    if status < 500:
                        break
                    error = f"HTTP {status}"
                if self.retry and attempt < self.attempts:
                    await asyncio.sleep(0.05 * attempt)
        except asyncio.CancelledError:
            status, job_id, error = 0, None, "Unanswered: no answer when the load ended"
        self.outcomes.append(
            Outcome(
                key, started, time.monotonic() - started, status, job_id, attempt, replayed, error
            )
        )


def _job_id(answer: httpx.Response) -> str | None:
    try:
        value = answer.json().get("id")
    except ValueError:
        return None
    return str(value) if value is not None else None


class WriteLoad(threading.Thread):
    """Runs writers on their own event loop in a thread; stop() ends them early."""

    def __init__(
        self, writers: list[Writer], seconds: float, verify: ssl.SSLContext | bool
    ) -> None:
        super().__init__(daemon=True)
        self.writers, self.seconds, self.verify = writers, seconds, verify
        self._loop = asyncio.new_event_loop()
        self._halt = asyncio.Event()
        self.crashed: BaseException | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.crashed = exc
        finally:
            self._loop.close()

    async def _main(self) -> None:
        await asyncio.gather(*(w.run(self._halt, self.seconds, self.verify) for w in self.writers))

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._halt.set)
        self.join(timeout)
        if self.crashed:
            raise RuntimeError(f"the write load crashed: {self.crashed!r}") from self.crashed


def start_process(writer: Writer, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Run `writer` in its own process for at most `seconds`; its outcomes go to `out`."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "harness.postload", "--out", str(out)),
            *("--seconds", str(seconds), "--writer", json.dumps(_settings(writer))),
        ],
        cwd=root,
    )


def finish_process(writer: Writer, proc: subprocess.Popen[bytes], out: Path) -> None:
    """Stop the writer's process (SIGINT) and read its outcomes into `writer`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_GRACE_S + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(
            f"the write load {writer.name!r} did not stop within {STOP_GRACE_S + 60:.0f} s"
        ) from None
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"the write load {writer.name!r} failed (exit {proc.returncode})")
    writer.outcomes = [Outcome(*row) for row in json.loads(out.read_text())]


def _settings(writer: Writer) -> dict[str, Any]:
    return {
        f.name: getattr(writer, f.name) for f in dataclasses.fields(writer) if f.name != "outcomes"
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writer", required=True, help="the Writer's fields, as JSON")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True, help="where the outcomes go (JSON)")
    args = parser.parse_args(argv)
    writer = Writer(**json.loads(args.writer))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await writer.run(stop, args.seconds, verify=False)

    asyncio.run(run())
    rows = [dataclasses.astuple(o) for o in writer.outcomes]
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(rows))
    partial.replace(args.out)
    return 0


def summary(writer: Writer) -> dict[str, Any]:
    """Counts for one writer: failures per 10,000, retries, and the duplicates seen."""
    outcomes = writer.outcomes
    failed = [o for o in outcomes if not o.ok]
    ids_by_key: dict[str, set[str]] = {}
    for o in outcomes:
        if o.job_id:
            ids_by_key.setdefault(o.key, set()).add(o.job_id)
    errors: dict[str, int] = {}
    for o in failed:
        reason = o.error.split(":")[0] or f"HTTP {o.status}"
        errors[reason] = errors.get(reason, 0) + 1
    return {
        "name": writer.name,
        "sent": len(outcomes),
        "accepted": len(outcomes) - len(failed),
        "failed": len(failed),
        "per_10k": 10_000 * len(failed) / len(outcomes) if outcomes else float("nan"),
        "retried": sum(o.attempts > 1 for o in outcomes),
        "replayed": sum(o.replayed for o in outcomes),
        "keys_with_two_jobs": sum(len(ids) > 1 for ids in ids_by_key.values()),
        "errors": errors,
        "job_ids": sorted({i for ids in ids_by_key.values() for i in ids}, key=int),
    }


def percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def phase_latency(outcomes: list[Outcome], start: float, end: float) -> str:
    seconds = [o.seconds for o in outcomes if start <= o.started < end]
    return (
        f"n={len(seconds):5d} p50={percentile_ms(seconds, 0.5):6.1f} ms "
        f"p99={percentile_ms(seconds, 0.99):6.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
