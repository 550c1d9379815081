"""harness/postload.py against a server that closes keep-alive connections under
requests, as nginx's old workers do during a reload: without retry each lost
answer is a failure; with retry and the same Idempotency-Key, none is, and no
key makes two jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import postload


class RacyServer:
    """HTTP/1.1 keep-alive server: every third new submission on a connection is
    read, its job created, and the connection closed before the answer is written
    (a resent key is always answered: a reload does not hit the same request twice)."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.created = 0
        self.port = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            headers = dict(
                line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
            )
            await reader.readexactly(int(headers.get("Content-Length", "0")))
            key = headers["Idempotency-Key"]
            replayed = key in self.jobs
            if not replayed:
                self.created += 1
                self.jobs[key] = str(self.created)
            served += 1
            if served % 3 == 0 and not replayed:
                writer.close()  # the job exists; the client never hears of it
                return
            body = json.dumps({"id": self.jobs[key]}).encode()
            extra = "Idempotent-Replayed: true\r\n" if replayed else ""
            writer.write(
                f"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()

    def serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            async with server:
                await server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(main())


@pytest.fixture
def racy() -> Iterator[RacyServer]:
    server = RacyServer()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    assert server.ready.wait(5)
    yield server
    for task in asyncio.all_tasks(server.loop):
        server.loop.call_soon_threadsafe(task.cancel)
    thread.join(5)


def _run(writer: postload.Writer, seconds: float) -> dict[str, Any]:
    load = postload.WriteLoad([writer], seconds, verify=False)
    load.start()
    load.join(seconds + 30)
    load.stop()
    return postload.summary(writer)


def test_without_retry_every_lost_answer_is_a_failure(racy: RacyServer) -> None:
    writer = postload.Writer("raw", f"http://127.0.0.1:{racy.port}/api/jobs", rate=200)
    result = _run(writer, 1.0)
    assert result["sent"] >= 150
    assert result["failed"] > 0, "the racy server dropped answers: they must count"
    assert result["retried"] == 0
    # Nothing was sent twice: the server made exactly one job per submission.
    assert racy.created == result["sent"]
    assert result["errors"] and all(e.endswith("Error") for e in result["errors"])


def test_with_retry_and_the_same_key_nothing_fails_and_nothing_is_doubled(
    racy: RacyServer,
) -> None:
    writer = postload.Writer(
        "retry", f"http://127.0.0.1:{racy.port}/api/jobs", rate=200, retry=True
    )
    result = _run(writer, 1.0)
    assert result["sent"] >= 150
    assert result["failed"] == 0, result["errors"]
    assert result["retried"] > 0 and result["replayed"] > 0
    assert result["keys_with_two_jobs"] == 0
    # One job per key on the server, whatever the client resent.
    assert racy.created == result["sent"] == len(result["job_ids"])


def test_phase_latency_counts_only_its_window() -> None:
    outcomes = [
        postload.Outcome("k1", 1.0, 0.010, 202, "1", 1, False),
        postload.Outcome("k2", 2.0, 0.500, 202, "2", 1, False),
    ]
    assert postload.phase_latency(outcomes, 0.0, 1.5).startswith("n=    1 p50=  10.0 ms")


def test_a_writer_in_its_own_process_reports_every_outcome(
    racy: RacyServer, tmp_path: Path
) -> None:
    writer = postload.Writer(
        "retry", f"http://127.0.0.1:{racy.port}/api/jobs", rate=100, retry=True
    )
    out = tmp_path / "outcomes.json"
    proc = postload.start_process(writer, 30, out)
    time.sleep(2.5)  # the interpreter starts, then about a second of load
    postload.finish_process(writer, proc, out)  # stopped early, by SIGINT
    result = postload.summary(writer)
    assert 50 <= result["sent"] < 3000
    assert result["failed"] == 0 and result["keys_with_two_jobs"] == 0
    assert racy.created == result["sent"]


def test_a_submission_unanswered_when_the_load_ends_counts_as_failed() -> None:
    """A server that never answers: every submission sent is counted, as failed."""

    async def main() -> postload.Writer:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            await asyncio.sleep(3600)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        w = postload.Writer("silent", f"http://127.0.0.1:{port}/api/jobs", rate=50)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        original = postload.STOP_GRACE_S
        postload.STOP_GRACE_S = 0.5
        try:
            await w.run(stop, 30, verify=False)
        finally:
            postload.STOP_GRACE_S = original
            server.close()
        return w

    writer = asyncio.run(main())
    result = postload.summary(writer)
    assert result["sent"] >= 10
    assert result["failed"] == result["sent"]
    assert result["errors"] == {"Unanswered": result["sent"]}
