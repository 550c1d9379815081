"""Unit tests for library/health_gate.py against a real local HTTP server."""

from __future__ import annotations

import re
import time
from typing import Any

import health_gate
import pytest
from conftest import GREEN_V2, FakeDocker, HealthServer, docker_doc
from health_gate import judge, run_gate

FAST: dict[str, Any] = {"interval": 0.05, "request_timeout": 0.3}


@pytest.mark.parametrize(
    ("paths", "options", "attempts"),
    [
        pytest.param(["/healthy"], {"consecutive": 3}, 3, id="healthy"),
        pytest.param(["/healthy"], {"consecutive": 1}, 1, id="one-round-enough"),
        pytest.param(["/healthy", "/healthy?b"], {"consecutive": 2}, 2, id="two-urls"),
        pytest.param(["/late"], {"consecutive": 3}, 5, id="healthy-after-two-503"),
        pytest.param(
            ["/healthy"],
            {"consecutive": 2, "expect_json": {"color": "green", "version": "v2"}},
            2,
            id="expected-json",
        ),
        pytest.param(
            ["/healthy"],
            {"consecutive": 1, "expect_json": {"checks.db": "ok"}},
            1,
            id="dotted-key",
        ),
        pytest.param(
            ["/draining"], {"consecutive": 1, "status_codes": [200, 503]}, 1, id="extra-status"
        ),
        pytest.param(
            ["/host"], {"consecutive": 1, "headers": {"Host": "app.example"}}, 1, id="headers"
        ),
    ],
)
def test_gate_passes(base: str, paths: list[str], options: dict[str, Any], attempts: int) -> None:
    options = {"status_codes": [200], "timeout": 5, **FAST, **options}
    result = run_gate([base + p for p in paths], **options)
    assert result.passed
    assert result.attempts == attempts
    assert all(a.ok and a.error is None for a in result.last_answers)


@pytest.mark.parametrize(
    ("path", "options", "error"),
    [
        pytest.param("/draining", {}, r"status 503, expected 200", id="unhealthy"),
        pytest.param("/slow", {"request_timeout": 0.2}, r"no answer: .*timed out", id="slow"),
        pytest.param(
            "/wrong",
            {"expect_json": GREEN_V2},
            r"version='v1', expected 'v2'",
            id="wrong-version",
        ),
        pytest.param(
            "/healthy",
            {"expect_json": {"colour": "green"}},
            r"colour missing",
            id="missing-field",
        ),
        pytest.param("/text", {"expect_json": GREEN_V2}, r"body is not JSON", id="not-json"),
    ],
)
def test_gate_fails(base: str, path: str, options: dict[str, Any], error: str) -> None:
    options = {"status_codes": [200], "timeout": 0.6, "consecutive": 3, **FAST, **options}
    started = time.monotonic()
    result = run_gate([base + path], **options)
    assert not result.passed
    assert result.attempts >= 2
    assert time.monotonic() - started < 3
    answer = result.last_answers[0]
    assert not answer.ok
    assert answer.error is not None
    assert re.search(error, answer.error), answer.error


def test_flapping_never_reaches_consecutive(base: str, server: HealthServer) -> None:
    result = run_gate([base + "/flap"], status_codes=[200], timeout=0.6, consecutive=2, **FAST)
    assert not result.passed
    assert result.consecutive_ok <= 1  # the last answer may be a healthy one
    assert result.attempts == server.hits["/flap"] >= 3


def test_nothing_listening(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/health"
    result = run_gate([url], status_codes=[200], timeout=0.2, **FAST)
    assert not result.passed
    assert result.last_answers[0].status is None
    assert "Connection refused" in (result.last_answers[0].error or "")


@pytest.mark.parametrize(
    ("status", "body", "expect", "problem"),
    [
        pytest.param(200, '{"version": 2}', {"version": "2"}, None, id="int-matches-text"),
        pytest.param(200, '{"ready": true}', {"ready": "true"}, None, id="bool-matches-text"),
        pytest.param(200, '{"ready": true}', {"ready": True}, None, id="bool"),
        pytest.param(200, '{"ready": false}', {"ready": True}, "ready=False", id="bool-differs"),
        pytest.param(200, '{"a": {"b": 1}}', {"a.b": 1}, None, id="nested"),
        pytest.param(200, '{"a": 1}', {"a.b": 1}, "a.b missing", id="nested-missing"),
        pytest.param(500, "", None, "status 500, expected 200", id="status"),
        pytest.param(None, "", None, None, id="transport-error-passed-through"),
    ],
)
def test_judge(status: int | None, body: str, expect: Any, problem: str | None) -> None:
    transport = "no answer: refused" if status is None else None
    got = judge(status, body, transport, [200], expect)
    if status is None:
        assert got == transport
    elif problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_module_passes(run_module: Any, base: str) -> None:
    result = run_module(
        health_gate.main,
        {
            "urls": [base + "/healthy"],
            "expect_json": GREEN_V2,
            "consecutive": 2,
            "interval": 0.05,
            "timeout": 5,
        },
    )
    assert not result.get("failed")
    assert result["changed"] is False
    assert result["attempts"] == 2
    assert result["last_answers"][0]["status"] == 200


def test_module_failure_message(run_module: Any, base: str) -> None:
    url = base + "/wrong"
    result = run_module(
        health_gate.main,
        {"url": url, "expect_json": GREEN_V2, "interval": 0.05, "timeout": 0.3},
    )
    assert result["failed"]
    assert result["msg"].startswith(f"health gate failed for {url}: after ")
    for fragment in ("attempts in", "the last answers were", "version='v1'", '"version": "v2"'):
        assert fragment in result["msg"]


def test_module_check_mode_does_not_poll(run_module: Any, base: str, server: HealthServer) -> None:
    result = run_module(health_gate.main, {"urls": [base + "/healthy"]}, check=True)
    assert not result.get("failed")
    assert result["attempts"] == 0
    assert result["would_check"]["urls"] == [base + "/healthy"]
    assert sum(server.hits.values()) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param({"urls": []}, r"urls must name at least one URL", id="no-urls"),
        pytest.param(
            {"urls": ["http://127.0.0.1:1/"], "consecutive": 0},
            r"consecutive must be 1 or more",
            id="consecutive",
        ),
        pytest.param(
            {"urls": ["http://127.0.0.1:1/"], "request_timeout": 0},
            r"request_timeout must be a positive",
            id="request-timeout",
        ),
    ],
)
def test_module_bad_arguments(run_module: Any, args: dict[str, Any], message: str) -> None:
    result = run_module(health_gate.main, args)
    assert result["failed"]
    assert re.search(message, result["msg"])


def gate_with_containers(run_module: Any, base: str, docker: FakeDocker, **extra: Any) -> Any:
    return run_module(
        health_gate.main,
        {
            "urls": [base + "/healthy"],
            "consecutive": 2,
            "interval": 0.05,
            "timeout": 5,
            "containers": ["archibald-backend-green", "archibald-frontend-green"],
            "docker_socket": docker.path,
            **extra,
        },
    )


def test_the_gate_returns_the_containers_that_kept_running(
    run_module: Any, base: str, docker: FakeDocker
) -> None:
    docker.containers = {
        n: docker_doc(n, "green", n.split("-")[1], restarts=2)
        for n in ("archibald-backend-green", "archibald-frontend-green")
    }
    result = gate_with_containers(run_module, base, docker, image_id="sha256:i")
    assert not result.get("failed"), result.get("msg")
    assert [(c["name"], c["image_id"], c["restart_count"]) for c in result["containers"]] == [
        ("archibald-backend-green", "sha256:i", 2),
        ("archibald-frontend-green", "sha256:i", 2),
    ]
    # Read once before the first round and once after the last.
    assert len(docker.seen) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda d: d.restarting.add("archibald-frontend-green"),
            "archibald-frontend-green restarted 1 time(s) while it was gated",
            id="crash-loop-healthy-between-restarts",
        ),
        pytest.param(
            lambda d: d.containers["archibald-backend-green"]["State"].update(Running=False),
            "archibald-backend-green is not running",
            id="stopped",
        ),
        pytest.param(
            lambda d: d.containers.pop("archibald-backend-green"),
            "archibald-backend-green is gone",
            id="gone",
        ),
        pytest.param(
            lambda d: d.containers["archibald-backend-green"].update(Image="sha256:other"),
            "archibald-backend-green runs image sha256:other instead of sha256:i",
            id="other-image",
        ),
    ],
)
def test_healthy_answers_with_a_container_that_did_not_keep_running_fail_the_gate(
    run_module: Any, base: str, docker: FakeDocker, change: Any, message: str
) -> None:
    docker.containers = {
        n: docker_doc(n, "green", n.split("-")[1])
        for n in ("archibald-backend-green", "archibald-frontend-green")
    }
    change(docker)
    result = gate_with_containers(run_module, base, docker, image_id="sha256:i")
    assert result["failed"]
    assert result["msg"].startswith("the answers were healthy, but not the containers behind")
    assert message in result["msg"]
