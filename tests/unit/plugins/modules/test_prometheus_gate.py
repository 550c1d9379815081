"""Unit tests for library/prometheus_gate.py against a real Prometheus.

A session fixture starts the Debian ``prometheus`` binary on a free loopback port, scraping a
small local HTTP server every second whose metrics the tests know in advance.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import prometheus_gate
import pytest
from prometheus_gate import (
    PrometheusDown,
    QueryRejected,
    make_gates,
    parse_result,
    query,
    run_gates,
)

from harness.wait import until

PROMETHEUS = "/usr/bin/prometheus"
GOOD = 'gate_test_error_ratio{state="good"}'
BAD = 'gate_test_error_ratio{state="bad"}'
FEW = 'gate_test_requests{state="few"}'
MANY = 'gate_test_requests{state="many"}'


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    scrapes = 0


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        self.server.scrapes += 1
        body = (
            "# TYPE gate_test_error_ratio gauge\n"
            'gate_test_error_ratio{state="good"} 0.01\n'
            'gate_test_error_ratio{state="bad"} 0.5\n'
            "# TYPE gate_test_requests gauge\n"
            'gate_test_requests{state="few"} 3\n'
            'gate_test_requests{state="many"} 100\n'
            "# TYPE gate_test_nan gauge\n"
            "gate_test_nan NaN\n"
            "# TYPE gate_test_scrapes_total counter\n"
            f"gate_test_scrapes_total {self.server.scrapes}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], log: Path, timeout: float = 30) -> None:
    """Poll ``check`` until it is true; fail with Prometheus' log after ``timeout`` seconds."""

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    until(
        f"Prometheus test fixture: {what}",
        check,
        timeout,
        0.2,
        ignore=(OSError, ValueError),
        detail=tail,
    )


def instant(base: str, promql: str) -> list[Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=2) as reply:
        return list(json.loads(reply.read())["data"]["result"])


@pytest.fixture(scope="session")
def metrics_server() -> Iterator[MetricsServer]:
    httpd = MetricsServer(("127.0.0.1", 0), MetricsHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def prometheus(
    metrics_server: MetricsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Start a real Prometheus scraping ``metrics_server`` every second; yield its base URL."""
    binary = shutil.which("prometheus") or PROMETHEUS
    if not Path(binary).exists():
        pytest.fail(
            f"{PROMETHEUS} is missing: these tests need a real Prometheus. Install the Debian "
            f"package (apt-get install prometheus); the test set-up does that."
        )
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: gate_test\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_server.server_address[1]}']\n"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()}")
            with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as reply:
                return bool(reply.status == 200)

        wait_for("readiness (/-/ready)", ready, log)
        wait_for(
            "an up scrape target with every test metric",
            lambda: (
                bool(instant(base, 'up{job="gate_test"} == 1'))
                and len(instant(base, "gate_test_error_ratio")) == 2
                and bool(instant(base, "gate_test_requests"))
            ),
            log,
        )
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def gate(name: str, promql: str, op: str, threshold: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "query": promql, "op": op, "threshold": threshold, **extra}


def judge(base: str, specs: list[dict[str, Any]], window: float = 0, interval: float = 0.3) -> Any:
    gates = make_gates(specs)
    return run_gates(
        gates,
        lambda promql: query(base, promql, request_timeout=2, retries=1),
        window=window,
        interval=interval,
    )


@pytest.mark.parametrize(
    ("specs", "verdict", "statuses"),
    [
        pytest.param([gate("errors", GOOD, "<", 0.1)], "pass", ["pass"], id="pass"),
        pytest.param([gate("errors", BAD, "<", 0.1)], "fail", ["fail"], id="breach"),
        pytest.param([gate("errors", BAD, "<=", 0.5)], "pass", ["pass"], id="le-boundary"),
        pytest.param([gate("traffic", MANY, ">=", 10)], "pass", ["pass"], id="ge"),
        pytest.param([gate("traffic", FEW, ">", 10)], "fail", ["fail"], id="gt-breach"),
        pytest.param(
            [gate("errors", "gate_test_error_ratio", "<", 0.1)],
            "fail",
            ["fail"],
            id="worst-of-many-series",
        ),
        pytest.param([gate("scalar", "1 + 1", "<", 3)], "pass", ["pass"], id="scalar"),
        pytest.param(
            [gate("errors", "gate_test_absent_metric", "<", 0.1)],
            "insufficient_data",
            ["insufficient_data"],
            id="empty-vector",
        ),
        pytest.param(
            [gate("errors", "gate_test_nan", "<", 0.1)],
            "insufficient_data",
            ["insufficient_data"],
            id="nan",
        ),
        pytest.param(
            [gate("errors", BAD, "<", 0.1, min_samples_query=FEW, min_samples=10)],
            "insufficient_data",
            ["insufficient_data"],
            id="below-min-samples",
        ),
        pytest.param(
            [gate("errors", GOOD, "<", 0.1, min_samples_query=MANY, min_samples=10)],
            "pass",
            ["pass"],
            id="enough-samples",
        ),
        pytest.param(
            [
                gate("errors", GOOD, "<", 0.1),
                gate("latency", "gate_test_absent_metric", "<", 1),
            ],
            "insufficient_data",
            ["pass", "insufficient_data"],
            id="one-gate-without-data",
        ),
        pytest.param(
            [gate("errors", GOOD, "<", 0.1), gate("traffic", FEW, ">=", 10)],
            "fail",
            ["pass", "fail"],
            id="second-gate-breaches",
        ),
    ],
)
def test_verdicts(
    prometheus: str, specs: list[dict[str, Any]], verdict: str, statuses: list[str]
) -> None:
    result = judge(prometheus, specs)
    assert result["verdict"] == verdict
    assert [g["status"] for g in result["gates"]] == statuses
    assert result["rounds"] == 1
    assert set(result["samples"]) == {s["name"] for s in specs}


def test_polls_over_the_window(prometheus: str) -> None:
    started = time.monotonic()
    result = judge(prometheus, [gate("errors", GOOD, "<", 0.1)], window=1.0, interval=0.3)
    took = time.monotonic() - started
    assert result["verdict"] == "pass"
    # rounds start at 0, 0.3, 0.6 and 0.9 s on an idle machine; fewer when queries are slow
    assert 2 <= result["rounds"] <= 4
    assert 0.3 <= took < 1.0 + 0.3 + 2
    assert [value for _, value in result["samples"]["errors"]] == [0.01] * result["rounds"]
    times = [at for at, _ in result["samples"]["errors"]]
    assert times == sorted(times)


def test_stops_at_the_first_breach_within_the_window(prometheus: str) -> None:
    scrapes = float(instant(prometheus, "gate_test_scrapes_total")[0]["value"][1])
    specs = [gate("scrapes", "gate_test_scrapes_total", "<", scrapes + 2)]
    result = judge(prometheus, specs, window=15, interval=0.5)
    assert result["verdict"] == "fail"
    assert 2 <= result["rounds"] < 30
    assert result["elapsed"] < 10
    breach = result["breached"][0]
    assert breach["value"] >= scrapes + 2
    assert result["samples"]["scrapes"][-1][1] == breach["value"]


@pytest.mark.parametrize(
    ("promql", "message"),
    [
        pytest.param(
            "rate(gate_test_requests[",
            r"Prometheus rejected the query .*HTTP 400.*parse error",
            id="parse-error",
        ),
        pytest.param(
            "gate_test_error_ratio[1m]",
            r"gives a matrix, expected an instant vector or a scalar",
            id="range-vector",
        ),
    ],
)
def test_invalid_query(prometheus: str, promql: str, message: str) -> None:
    with pytest.raises(QueryRejected, match=message):
        query(prometheus, promql, retries=3)


def test_prometheus_down() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    naps: list[float] = []
    with pytest.raises(
        PrometheusDown,
        match=rf"Prometheus at {base} did not answer: .*Connection refused.* \(tried 3 times\); "
        r"the release was NOT judged",
    ):
        query(base, "up", retries=3, retry_delay=0.01, sleep=naps.append)
    assert naps == [0.01, 0.01]


@pytest.mark.parametrize(
    ("payload", "values"),
    [
        pytest.param(
            {"status": "success", "data": {"resultType": "vector", "result": []}}, [], id="empty"
        ),
        pytest.param(
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "0.5"]}},
            [0.5],
            id="scalar",
        ),
        pytest.param(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"value": [1, "NaN"]}, {"value": [1, "+Inf"]}],
                },
            },
            [float("inf")],
            id="nan-dropped",
        ),
    ],
)
def test_parse_result(payload: dict[str, Any], values: list[float]) -> None:
    assert parse_result("q", payload) == values


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        pytest.param([], r"at least one gate", id="none"),
        pytest.param(
            [gate("a", "up", "<", 1), gate("a", "up", ">", 0)], r"repeated: a", id="duplicate"
        ),
        pytest.param([gate("a", "up", "==", 1)], r"op must be one of <, <=, >, >=", id="op"),
    ],
)
def test_make_gates_errors(specs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_gates(specs)


def module_args(base: str, *specs: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"url": base, "gates": list(specs), "window": 0, "interval": 0.2, **options}


def test_module_breach_fails_with_evidence(run_module: Any, prometheus: str) -> None:
    result = run_module(
        prometheus_gate.main,
        module_args(prometheus, gate("error_rate", BAD, "<", 0.1), window=0.5),
    )
    assert result["failed"]
    assert result["verdict"] == "fail" and not result["passed"]
    assert re.search(
        r"^prometheus gate failed, the release is judged bad: gate error_rate breached: "
        r"gate_test_error_ratio\{state=\"bad\"\} was 0.5 at \d\d:\d\d:\d\dZ, must be < 0.1; "
        r"values over [\d.]+ s: 0.5$",
        result["msg"],
    ), result["msg"]


def test_module_breach_returns_verdict_without_failing(run_module: Any, prometheus: str) -> None:
    result = run_module(
        prometheus_gate.main,
        module_args(prometheus, gate("error_rate", BAD, "<", 0.1), fail_on_breach=False),
    )
    assert not result.get("failed")
    assert result["changed"] is False
    assert result["verdict"] == "fail" and result["passed"] is False
    assert result["breached"][0]["name"] == "error_rate"


@pytest.mark.parametrize(
    ("fail_on_insufficient_data", "failed", "passed"),
    [(False, False, True), (True, True, False)],
)
def test_module_insufficient_data(
    run_module: Any,
    prometheus: str,
    fail_on_insufficient_data: bool,
    failed: bool,
    passed: bool,
) -> None:
    spec = gate("errors", BAD, "<", 0.1, min_samples_query=FEW, min_samples=10)
    result = run_module(
        prometheus_gate.main,
        module_args(prometheus, spec, fail_on_insufficient_data=fail_on_insufficient_data),
    )
    assert bool(result.get("failed")) is failed
    assert result["verdict"] == "insufficient_data"
    assert result["passed"] is passed
    assert result["samples"]["errors"][0][1] is None
    if failed:
        assert re.search(
            r"could not judge the release .*gate errors: .* returned no data or "
            r"gate_test_requests\{state=\"few\"\} stayed below 10",
            result["msg"],
        ), result["msg"]


def test_module_check_mode_queries_once_and_never_fails(run_module: Any, prometheus: str) -> None:
    result = run_module(
        prometheus_gate.main,
        module_args(prometheus, gate("error_rate", BAD, "<", 0.1), window=60),
        check=True,
    )
    assert not result.get("failed")
    assert result["rounds"] == 1 and result["verdict"] == "fail"


@pytest.mark.parametrize(
    ("url", "promql", "message"),
    [
        pytest.param(
            "closed",
            "up",
            r"Prometheus at http://127.0.0.1:\d+ did not answer: .*; the release was NOT judged",
            id="down",
        ),
        pytest.param(
            "live",
            "sum(",
            r"Prometheus rejected the query 'sum\(' \(HTTP 400\): .*parse error.*; the release "
            r"was NOT judged",
            id="invalid-query",
        ),
    ],
)
def test_module_not_judged(
    run_module: Any, prometheus: str, url: str, promql: str, message: str
) -> None:
    base = prometheus if url == "live" else f"http://127.0.0.1:{free_port()}"
    result = run_module(
        prometheus_gate.main, module_args(base, gate("g", promql, "<", 1), retries=1)
    )
    assert result["failed"]
    assert re.search(message, result["msg"]), result["msg"]
