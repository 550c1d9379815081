"""No request a client can send makes the backend answer 5xx (issue 12).

Property-based: hypothesis drives the real aiohttp application (aiohttp's test
server, a real SQLite file) with arbitrary bodies, headers, query strings and
job ids, and every answer must be below 500, JSON, with an `error` when it is
an error. A 5xx would count as a server fault in the release analysis and
could roll a healthy release back.

Out of scope, because the app never sees them: requests that HTTP itself
cannot parse (broken framing). aiohttp's parser answers those 400 in plain
text before any route or middleware runs, and they never reach the metrics.

Kept fast: one application per module, bounded example counts, no example
database written into the work tree.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from apptest_support import backend_config, in_process_backend
from archibald_app.service import ServiceState
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = settings(
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "150")),
    deadline=1000,  # ms per example; one request on loopback takes a few
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MAX_BODY = 2048


class SyncBackend:
    """The in-process backend on its own event loop, with a blocking `request`."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.client, self.state = self.loop.run_until_complete(self._start(tmp_path))

    async def _start(self, tmp_path: Path) -> tuple[TestClient, ServiceState]:
        # A fresh connection per request: an unreadable body closes its connection.
        self._backend = in_process_backend(
            backend_config(tmp_path, max_body_bytes=MAX_BODY),
            connector=aiohttp.TCPConnector(force_close=True),
        )
        return await self._backend.__aenter__()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        async def send() -> tuple[int, str, bytes]:
            async with self.client.request(
                method, path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
            ) as answer:
                return answer.status, answer.headers.get("Content-Type", ""), await answer.read()

        return self.loop.run_until_complete(send())

    def close(self) -> None:
        self.loop.run_until_complete(self._backend.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncBackend]:
    app = SyncBackend(tmp_path_factory.mktemp("malformed"))
    yield app
    app.close()


def assert_client_answer(status: int, content_type: str, payload: bytes) -> Any:
    assert status < 500, (status, payload[:300])
    assert content_type.startswith("application/json"), (status, content_type, payload[:300])
    answer = json.loads(payload)
    if status >= 400:
        assert isinstance(answer, dict) and answer.get("error"), answer
    return answer


def assert_no_5xx_counted(state: ServiceState) -> None:
    text = state.metrics.render().decode()
    assert 'status_code="5' not in text, [ln for ln in text.splitlines() if 'status_code="5' in ln]


# --- strategies ---------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and Infinity too: json.dumps writes them, they are not JSON
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
params = st.dictionaries(
    st.sampled_from(["seconds", "cpu", "message"]) | st.text(max_size=6), json_values, max_size=4
)
submissions = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["sleep", "fail"]) | json_values,
        "params": params | json_values,
        "extra": json_values,
    },
)


def nest(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


def corrupt(raw: bytes, at: int, byte: int) -> bytes:
    at = at % (len(raw) + 1)
    return raw[:at] + bytes([byte]) + raw[at + 1 :]


valid = b'{"kind": "sleep", "params": {"seconds": 0, "cpu": 0}}'
bodies = st.one_of(
    st.binary(max_size=MAX_BODY + 200),
    submissions.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(nest, st.integers(0, 1500), st.sampled_from(["[", '{"a":'])),
    st.builds(corrupt, st.just(valid), st.integers(0, 200), st.integers(0, 255)),
    st.sampled_from(
        [
            b"",
            b"NaN",
            b"-Infinity",
            b"1e999",
            b"9" * 5000,
            b'"\\ud800"',
            b'{"kind": "fail", "params": {"message": "\\udfff"}}',
            b"\xef\xbb\xbf{}",
            '{"kind": "sleep"}'.encode("utf-16"),
            b'{"kind": "sleep", "params": {"seconds": 1}}' * 2,
        ]
    ),
)
# Header values the client can send: Latin-1 without control characters (aiohttp
# refuses DEL and C1 as it refuses CR and LF).
CONTROLS = "".join(map(chr, [0x7F, *range(0x80, 0xA0)]))
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters=CONTROLS),
    max_size=60,
)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "application/merge-patch+json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/",
            "/json",
            ";",
        ]
    )
    | header_text
)
encodings = st.sampled_from(["gzip", "deflate", "identity", "br", "zstd", "GZIP"]) | header_text
keys = (
    st.sampled_from(['"k-1"', '""', '"a"b"', "a b", "x" * 300, '"0123456789abcdef"'])
    | st.from_regex(r'"?[A-Za-z0-9._~:+/=-]{14,20}"?', fullmatch=True)
    | header_text
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": content_types,
        "Content-Encoding": encodings,
        "Idempotency-Key": keys,
        "Accept": header_text,
        "Content-Language": header_text,
    },
)


def maybe_compress(body: bytes, headers: dict[str, str]) -> bytes:
    """A body sent as gzip or deflate is really compressed half the time (and then
    maybe cut short), so the decoder's good and broken paths are both exercised."""
    coding = headers.get("Content-Encoding", "").strip().lower()
    if coding in ("gzip", "deflate") and len(body) % 2:
        packed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
        return packed[: len(packed) - len(body) % 3]
    return body


# --- properties ---------------------------------------------------------------------


@EXAMPLES
@given(body=bodies, headers=headers)
def test_no_submission_body_or_header_gives_a_5xx(
    backend: SyncBackend, body: bytes, headers: dict[str, str]
) -> None:
    status, content_type, payload = backend.request(
        "POST", "/api/jobs", maybe_compress(body, headers), headers
    )
    answer = assert_client_answer(status, content_type, payload)
    if status == 202:
        assert isinstance(answer["id"], int)
    assert_no_5xx_counted(backend.state)


@EXAMPLES
@given(body=bodies)
def test_no_json_body_gives_a_5xx(backend: SyncBackend, body: bytes) -> None:
    """The same bodies with a correct Content-Type, so they reach the JSON decoder."""
    status, content_type, payload = backend.request(
        "POST", "/api/jobs", body, {"Content-Type": "application/json"}
    )
    assert_client_answer(status, content_type, payload)


query_names = st.sampled_from(["limit", "before", "offset", "status"]) | st.text(max_size=5)
query_values = (
    st.integers(-(10**40), 10**40).map(str)
    | st.sampled_from(["", "abc", "-1", "1.5", "1e3", "٣", "NaN", "queued", "done"])
    | st.text(max_size=30)
)


@EXAMPLES
@given(pairs=st.lists(st.tuples(query_names, query_values), max_size=4))
def test_no_query_string_gives_a_5xx(backend: SyncBackend, pairs: list[tuple[str, str]]) -> None:
    query = urllib.parse.urlencode(pairs)
    status, content_type, payload = backend.request("GET", "/api/jobs?" + query)
    answer = assert_client_answer(status, content_type, payload)
    if status == 200:
        assert 1 <= answer["limit"] <= 500 and len(answer["jobs"]) <= answer["limit"]


@settings(EXAMPLES, max_examples=max(1, EXAMPLES.max_examples // 2))  # five requests each
@given(raw=st.text(max_size=40) | st.integers(-(10**30), 10**30).map(str))
def test_no_raw_query_or_job_id_gives_a_5xx(backend: SyncBackend, raw: str) -> None:
    quoted = urllib.parse.quote(raw, safe="")
    for method, path in [
        ("GET", "/api/jobs/" + quoted),
        ("GET", "/api/jobs?" + urllib.parse.quote(raw, safe="=&")),
        ("GET", "/api/jobs?limit=" + quoted),
        ("POST", "/api/jobs/" + quoted),
        ("DELETE", "/api/jobs/" + quoted),
    ]:
        assert_client_answer(*backend.request(method, path))
    assert_no_5xx_counted(backend.state)
