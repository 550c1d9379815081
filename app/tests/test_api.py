"""The HTTP contract, in process: validation, limits, headers, health, metrics, faults."""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apptest_support import run_backend
from archibald_app import frontend
from archibald_app.config import Config
from archibald_app.logs import EventLog
from archibald_app.metrics import Metrics
from archibald_app.service import ServiceState

JSON = {"Content-Type": "application/json"}


def test_submit_and_read(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        r = await client.post("/api/jobs", json={"kind": "sleep", "params": {"seconds": 1}})
        assert r.status == 202
        body = await r.json()
        assert body["status"] == "queued"
        assert r.headers["Location"] == f"/api/jobs/{body['id']}"
        r = await client.get(f"/api/jobs/{body['id']}")
        job = await r.json()
        assert (job["kind"], job["params"], job["status"]) == (
            "sleep",
            {"seconds": 1.0, "cpu": 0.1},
            "queued",
        )

    run_backend(tmp_path, scenario)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"[1, 2]", 422, "body"),
        (b'{"params": {}}', 422, "kind"),
        (b'{"kind": "mine"}', 422, "kind"),
        (b'{"kind": "sleep", "params": []}', 422, "params"),
        (b'{"kind": "sleep", "params": {}}', 422, "params.seconds"),
        (b'{"kind": "sleep", "params": {"seconds": "1"}}', 422, "params.seconds"),
        (b'{"kind": "sleep", "params": {"seconds": 31}}', 422, "params.seconds"),
        (b'{"kind": "sleep", "params": {"seconds": 1, "cpu": 2}}', 422, "params.cpu"),
        (b'{"kind": "sleep", "params": {"seconds": 1, "x": 2}}', 422, "params.x"),
        (b'{"kind": "fail", "params": {"message": 5}}', 422, "params.message"),
        (b'{"kind": "fail", "extra": 1}', 422, "extra"),
        (b"", 400, "body"),
        (b"\xff\xfe{}", 400, "body"),  # not UTF-8
        ('{"kind": "sleep"}'.encode("utf-16"), 400, "body"),
        (b"\xef\xbb\xbf{}", 400, "body"),  # a byte order mark
        (b'{"kind": "sleep", "params": {"seconds": NaN}}', 400, "body"),
        (b'{"kind": "sleep", "params": {"seconds": Infinity}}', 400, "body"),
        (b'{"kind": "sleep", "params": {"seconds": -Infinity}}', 400, "body"),
        (b'{"kind": "sleep", "params": {"seconds": 1e999}}', 400, "body"),
        (b'{"kind": "sleep", "params": {"seconds": ' + b"9" * 400 + b"}}", 400, "body"),
        (b'{"kind": "sleep", "params": {"seconds": 1e300}}', 422, "params.seconds"),
        (b'{"kind": "fail", "params": {"message": "\\ud800"}}', 400, "body"),
        (b'{"kind": "fail", "params": {"message": "\\ud83d\\ude00"}}', 202, None),
        (b'{"kind": "fail", "x": ' + b"[" * 31 + b"]" * 31 + b"}", 422, "x"),  # 32 deep
        (b'{"kind": "fail", "x": "' + b"[" * 40 + b'"}', 422, "x"),  # brackets in a string
        (b"[" * 33 + b"]" * 33, 400, "body"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, 400, "body"),
        (b'{"kind": "sleep", "params": {"seconds": 1}} trailing', 400, "body"),
    ],
)
def test_submit_validation(tmp_path: Path, body: bytes, status: int, field: str | None) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        r = await client.post("/api/jobs", data=body, headers=JSON)
        assert r.status == status, await r.text()
        answer = await r.json()
        if field is not None:
            assert answer["field"] == field
            assert field in answer["error"]

    run_backend(tmp_path, scenario)


ANSWERED_500_BEFORE_ISSUE_12 = [
    # A JSON body 1,000 brackets deep (1 KB): json.loads raises RecursionError.
    pytest.param("POST", "/api/jobs", b"[" * 1000, {}, id="nested-1000-deep"),
    pytest.param("POST", "/api/jobs", b'{"a":' * 1000, {}, id="objects-1000-deep"),
    # A body that says it is gzip and is not: aiohttp's decompression raised
    # RequestPayloadError in the handler (now `bodies` decompresses it).
    pytest.param("POST", "/api/jobs", b"{}", {"Content-Encoding": "gzip"}, id="bad-gzip"),
    # 5,000 digits pass isdigit() and make int() raise ValueError.
    pytest.param("GET", "/api/jobs?offset=" + "9" * 5000, None, {}, id="offset-5000-digits"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), ANSWERED_500_BEFORE_ISSUE_12)
def test_client_faults_answer_4xx_not_500(
    tmp_path: Path, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        headers.setdefault("Content-Type", "application/json")
        headers["Connection"] = "close"  # a payload error closes the connection
        r = await client.request(method, path, data=body, headers=headers)
        assert 400 <= r.status < 500, (r.status, await r.text())
        assert "error" in await r.json()
        text = await (await client.get("/metrics")).text()
        assert 'status_code="500"' not in text

    run_backend(tmp_path, scenario)


@pytest.mark.parametrize(
    ("headers", "status", "field", "advice"),
    [
        ({}, 415, "Content-Type", ("Accept-Post", "application/json")),
        ({"Content-Type": "text/plain"}, 415, "Content-Type", ("Accept-Post", "application/json")),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type", None),
        ({"Content-Type": "application/json; charset=latin-1"}, 415, "Content-Type", None),
        ({"Content-Type": "application/jsonx"}, 415, "Content-Type", None),
        ({"Content-Type": ";;;==="}, 415, "Content-Type", None),
        (
            {"Content-Type": "application/json", "Content-Encoding": "compress"},
            415,
            "Content-Encoding",
            ("Accept-Encoding", "gzip, deflate"),
        ),
        (
            {"Content-Type": "application/json", "Content-Encoding": "gzip, gzip"},
            415,
            "Content-Encoding",
            None,
        ),
        ({"Content-Type": "Application/JSON; charset=UTF-8"}, 202, None, None),
        ({"Content-Type": "application/vnd.archibald+json"}, 202, None, None),
        ({"Content-Type": "application/json", "Content-Encoding": "identity"}, 202, None, None),
    ],
)
def test_submit_media_type(
    tmp_path: Path,
    headers: dict[str, str],
    status: int,
    field: str | None,
    advice: tuple[str, str] | None,
) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        body = b'{"kind": "sleep", "params": {"seconds": 0}}'
        r = await client.post(
            "/api/jobs", data=body, headers=headers, skip_auto_headers=["Content-Type"]
        )
        assert r.status == status, await r.text()
        answer = await r.json()
        if field is not None:
            assert answer["field"] == field and field in answer["error"]
        if advice is not None:
            assert r.headers[advice[0]] == advice[1]

    run_backend(tmp_path, scenario)


def test_gzip_bodies_are_read_and_bombs_are_413(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        good = gzip.compress(b'{"kind": "sleep", "params": {"seconds": 0}}')
        assert (await client.post("/api/jobs", data=good, headers=headers)).status == 202
        bomb = gzip.compress(b'{"kind": "' + b" " * 100_000 + b'"}')
        assert len(bomb) < 1024
        r = await client.post("/api/jobs", data=bomb, headers=headers)
        assert r.status == 413 and (await r.json())["field"] == "body"

    run_backend(tmp_path, scenario, max_body_bytes=1024)


def test_body_over_limit_is_413(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        big = b'{"kind": "sleep", "params": {"seconds": 1}, "pad": "' + b"x" * 2000 + b'"}'
        r = await client.post("/api/jobs", data=big, headers=JSON)
        assert r.status == 413
        assert (await r.json())["field"] == "body"

        async def chunks() -> Any:
            for _ in range(20):
                yield b" " * 200

        r = await client.post("/api/jobs", data=chunks(), headers=JSON)
        assert r.status == 413

    run_backend(tmp_path, scenario, max_body_bytes=1024)


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("?status=bogus", 400, "status"),
        ("?limit=0", 400, "limit"),
        ("?limit=501", 400, "limit"),
        ("?offset=2", 400, "offset"),
        ("?before=0", 400, "before"),
        ("?before=-1", 400, "before"),
        ("?before=" + "9" * 19, 400, "before"),
        ("?limit=x", 400, "limit"),
        ("?limit=abc", 400, "limit"),
        ("?limit=-1", 400, "limit"),
        ("?limit=1.5", 400, "limit"),
        ("?limit=" + "1" + "0" * 30, 400, "limit"),
        ("?limit=%D9%A3", 400, "limit"),  # an Arabic-Indic 3: isdigit() but not ASCII
        ("?limit=1&limit=2", 400, "limit"),
        ("?limit=%00", 400, "limit"),
        ("?before=" + "9" * 5000, 400, "before"),
        ("?before=1&before=2", 400, "before"),
        ("?before=" + "9" * 18, 200, None),
        ("?status=done&status=failed", 400, "status"),
        ("?status=%FF", 400, "status"),
        ("?limit=", 200, None),
        ("?unknown=1", 200, None),
    ],
)
def test_list_validation(tmp_path: Path, query: str, status: int, field: str | None) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        r = await client.get("/api/jobs" + query)
        assert r.status == status
        assert (await r.json()).get("field") == field

    run_backend(tmp_path, scenario)


@pytest.mark.parametrize(
    "job_id",
    ["x", "-1", "0", "00", "1.0", "1e3", "%D9%A3", "%00", "9" * 19, "9" * 5000, "1%20", "%FF"],
)
def test_bad_job_ids_are_400(tmp_path: Path, job_id: str) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        r = await client.get("/api/jobs/" + job_id)
        assert r.status == 400, await r.text()
        assert (await r.json())["field"] == "id"

    run_backend(tmp_path, scenario)


def test_list_pages(tmp_path: Path) -> None:
    """Keyset pages, newest first: each page's next_before asks for the next one,
    the last page has none, and a job submitted meanwhile does not shift them."""

    async def scenario(client: TestClient, state: ServiceState) -> None:
        for _ in range(5):
            await client.post("/api/jobs", json={"kind": "sleep", "params": {"seconds": 0}})
        page = await (await client.get("/api/jobs?status=queued&limit=2")).json()
        assert ([j["id"] for j in page["jobs"]], page["next_before"]) == ([5, 4], 4)
        await client.post("/api/jobs", json={"kind": "sleep", "params": {"seconds": 0}})
        page = await (await client.get("/api/jobs?status=queued&limit=2&before=4")).json()
        assert ([j["id"] for j in page["jobs"]], page["next_before"]) == ([3, 2], 2)
        page = await (await client.get("/api/jobs?limit=2&before=2")).json()
        assert ([j["id"] for j in page["jobs"]], page["next_before"]) == ([1], None)
        page = await (await client.get("/api/jobs?status=done")).json()
        assert page == {"jobs": [], "limit": 50, "next_before": None}
        r = await client.get("/api/jobs/x")
        assert r.status == 400 and (await r.json())["field"] == "id"
        r = await client.get("/api/jobs/999")
        assert r.status == 404

    run_backend(tmp_path, scenario)


def test_every_answer_carries_colour_and_version(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        for method, path in [
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("GET", "/nowhere"),
            ("DELETE", "/api/jobs"),
            ("GET", "/api/jobs/999"),
            ("POST", "/api/jobs"),
        ]:
            r = await client.request(method, path)
            assert r.headers["X-App-Color"] == "blue", (method, path)
            assert r.headers["X-App-Version"] == "v7", (method, path)

    run_backend(tmp_path, scenario)


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    """APP_MAX_QUEUED_JOBS jobs wait (the runner is not started here): the next
    submission gets 429 with Retry-After, a client's back-off and not a server
    fault; a replay of an accepted Idempotency-Key still answers 202."""

    async def scenario(client: TestClient, state: ServiceState) -> None:
        body = {"kind": "sleep", "params": {"seconds": 1}}
        keyed = {"Idempotency-Key": '"first-of-three-jobs"'}
        statuses = [(await client.post("/api/jobs", json=body, headers=keyed)).status]
        statuses += [(await client.post("/api/jobs", json=body)).status for _ in range(2)]
        refused = await client.post("/api/jobs", json=body)
        assert statuses == [202, 202, 202]
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "5"
        answer = await refused.json()
        assert answer["retry_after_s"] == 5 and answer["field"] is None
        assert "job queue is full (3 jobs wait to run)" in answer["error"]
        replay = await client.post("/api/jobs", json=body, headers=keyed)
        assert (replay.status, replay.headers["Idempotent-Replayed"]) == (202, "true")
        listed = await (await client.get("/api/jobs?status=queued")).json()
        assert len(listed["jobs"]) == 3, "the refused submission stored nothing"

    run_backend(tmp_path, scenario, max_queued_jobs=3)


def test_health_and_draining(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        r = await client.get("/health")
        assert r.status == 200
        assert await r.json() == {
            "status": "ok",
            "color": "blue",
            "version": "v7",
            "service": "backend",
        }
        state.draining = True
        r = await client.get("/health")
        assert r.status == 503
        assert (await r.json())["status"] == "draining"
        r = await client.post("/api/jobs", json={"kind": "sleep", "params": {"seconds": 1}})
        assert r.status == 503
        assert r.headers["Retry-After"] == "5"
        assert (await client.get("/api/jobs")).status == 200

    run_backend(tmp_path, scenario)


def test_metrics_use_route_templates(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        await client.post("/api/jobs", json={"kind": "sleep", "params": {"seconds": 1}})
        await client.get("/api/jobs/1")
        await client.get("/api/jobs/12345")
        await client.get("/secret/path/123")
        text = await (await client.get("/metrics")).text()
        assert 'route="/api/jobs/{id}",status_code="200"' in text
        assert 'route="/api/jobs/{id}",status_code="404"' in text
        assert 'http_requests_total{method="GET",route="unmatched",status_code="404"} 1.0' in text
        assert "/secret" not in text and "12345" not in text
        assert 'le="0.1"' in text and 'le="10.0"' in text and 'le="0.25"' not in text
        assert "job_queue_size 1.0" in text
        assert 'jobs_total{kind="sleep",status="submitted"} 1.0' in text
        assert 'app_info{color="blue",service="backend",version="v7"} 1.0' in text
        assert "worker_pool_size 4.0" in text
        assert "active_operations 1.0" in text  # the scrape itself
        assert 'db_queries_total{operation="insert"} 1.0' in text
        for name in (
            "active_operations",
            "app_draining",
            "job_processing_seconds",
            "worker_pool_busy",
            "worker_pool_waits_total",
            "worker_pool_restarts_total",
        ):
            assert f"# TYPE {name}" in text

    run_backend(tmp_path, scenario)


def test_metrics_middleware_can_be_turned_off(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        await client.get("/health")
        text = await (await client.get("/metrics")).text()
        assert "http_requests_total{" not in text
        assert "app_info{" in text

    run_backend(tmp_path, scenario, metrics_enabled=False)


def test_fault_injection(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        assert (await client.get("/api/jobs")).status == 500
        assert (await client.get("/health")).status == 503
        assert (await (await client.get("/health")).json())["status"] == "unhealthy"
        assert (await client.get("/metrics")).status == 200

    run_backend(tmp_path, scenario, fault_api_error_ratio=1.0, fault_unhealthy=True)


def test_fault_ratio_is_a_fraction(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        statuses = [(await client.get("/api/jobs?limit=1")).status for _ in range(200)]
        errors = statuses.count(500)
        assert 50 <= errors <= 150, errors
        assert set(statuses) == {200, 500}

    run_backend(tmp_path, scenario, fault_api_error_ratio=0.5)


def test_frontend_serves_the_page(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = Config(color="green", version="v2")
        metrics = Metrics(service="frontend", color=cfg.color, version=cfg.version)
        state = ServiceState(
            cfg=cfg, service="frontend", metrics=metrics, log=EventLog(), instance="f"
        )
        async with TestClient(TestServer(frontend.make_app(state))) as client:
            r = await client.get("/")
            assert r.status == 200
            page = await r.text()
            # No inline script or style: the edge's CSP forbids them (script-src 'self').
            assert "<script>" not in page and "<style>" not in page
            js = re.search(r'<script src="/static/(app\.[0-9a-f]{12}\.js)">', page)
            css = re.search(
                r'<link rel="stylesheet" href="/static/(app\.[0-9a-f]{12}\.css)">', page
            )
            assert js and css, page
            assert r.headers["X-App-Color"] == "green"
            script = await client.get(f"/static/{js.group(1)}")
            assert script.status == 200
            assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert 'fetch("/api/jobs' in await script.text()
            style = await client.get(f"/static/{css.group(1)}")
            assert style.headers["Content-Type"] == "text/css; charset=utf-8"
            assert (await client.get("/static/nothing.js")).status == 404
            assert (await client.get("/health")).status == 200
            text = await (await client.get("/metrics")).text()
            assert 'app_info{color="green",service="frontend",version="v2"} 1.0' in text
            assert "job_queue_size" not in text
            assert (await client.get("/api/jobs")).status == 404

    asyncio.run(main())


def test_unknown_methods_do_not_grow_label_sets(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        for verb in ("PROPFIND", "MKCOL", "LOCK"):
            await client.request(verb, "/api/jobs")
        text = await (await client.get("/metrics")).text()
        assert 'method="other",route="unmatched",status_code="405"' in text
        assert "PROPFIND" not in text

    run_backend(tmp_path, scenario)


def test_no_created_series(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        await client.get("/health")
        text = await (await client.get("/metrics")).text()
        assert "_created" not in text

    run_backend(tmp_path, scenario)
