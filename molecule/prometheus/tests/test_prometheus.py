"""Verify role `prometheus`: loopback only, targets up, retention flags live, reload keeps data."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

API = "http://127.0.0.1:9090/api/v1"
# Our own series only: Debian's package starts Prometheus with its default
# configuration (targets localhost:9090 and :9100) before the role replaces it.
RELOAD_TS = 'prometheus_config_last_reload_success_timestamp_seconds{instance="127.0.0.1:9090"}'
NODE_SAMPLES = 'count_over_time(up{job="node", instance="127.0.0.1:9100"}[1h])'
EXPECTED_JOBS = {"archibald", "node", "nginx", "prometheus"}


def _get(host, path: str) -> Any:
    out = host.check_output(f"curl -fsS --max-time 5 '{API}/{path}'")
    return json.loads(out)["data"]


def _poll(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    pytest.fail(f"{what} not reached within {timeout}s; last: {last}")


def _query(host, expr: str) -> list[dict[str, Any]]:
    out = host.check_output(
        f"curl -fsS --max-time 5 -G '{API}/query' --data-urlencode 'query={expr}'"
    )
    return json.loads(out)["data"]["result"]


@pytest.mark.parametrize(
    "service", ["prometheus", "prometheus-nginx-exporter", "prometheus-node-exporter"]
)
def test_services_enabled_and_running(host, service: str) -> None:
    unit = host.service(service)
    assert unit.is_enabled
    assert unit.is_running


@pytest.mark.parametrize("port", [9090, 9100, 9113])
def test_listens_on_loopback_only(host, port: int) -> None:
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://:::{port}").is_listening


def test_config_and_rules_are_rendered(host) -> None:
    config = host.file("/etc/prometheus/prometheus.yml")
    assert config.mode == 0o644
    assert "Ansible managed" in config.content_string
    host.check_output("promtool check config /etc/prometheus/prometheus.yml")
    assert host.file("/etc/prometheus/rules/archibald.rules.yml").exists


def test_every_target_is_up_with_labels(host) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = _get(host, "targets")["activeTargets"]
        jobs = {t["labels"]["job"] for t in targets}
        if jobs == EXPECTED_JOBS and all(t["health"] == "up" for t in targets):
            return targets
        return None

    targets = _poll("all scrape targets up", all_up)
    app = [t for t in targets if t["labels"]["job"] == "archibald"]
    assert app[0]["labels"]["color"] == "blue"
    assert app[0]["labels"]["service"] == "backend"
    assert app[0]["scrapeUrl"] == "http://127.0.0.1:8101/metrics"


def test_scrape_and_evaluation_interval(host) -> None:
    config = _get(host, "status/config")["yaml"]
    assert "scrape_interval: 15s" in config
    assert "evaluation_interval: 15s" in config


def test_alert_rules_are_loaded(host) -> None:
    groups = _get(host, "rules")["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"]}
    assert {"AppHighErrorRate", "TargetDown", "DiskFilling"} <= alerts


def test_edge_recording_rules_are_loaded(host) -> None:
    groups = {g["name"]: g for g in _get(host, "rules")["groups"]}
    records = {r["name"] for r in groups["archibald-edge"]["rules"]}
    assert records == {
        "color:edge_http_requests:rate1m",
        "color:edge_http_requests:increase1m",
        "color:edge_http_server_errors:ratio_rate1m",
        "color_service:edge_http_request_duration_seconds:p99_1m",
    }
    assert all(r["health"] == "ok" for r in groups["archibald-edge"]["rules"])


def test_retention_flags_are_live(host) -> None:
    flags = _get(host, "status/flags")
    assert flags["storage.tsdb.retention.time"] == "15d"
    # Prometheus' size units are binary: it reports 5GB back as 5GiB.
    assert flags["storage.tsdb.retention.size"] in ("5GB", "5GiB")
    assert flags["web.listen-address"] == "127.0.0.1:9090"
    args = host.check_output("cat /proc/$(pidof prometheus)/cmdline | tr '\\0' ' '")
    assert "--storage.tsdb.retention.time=15d" in args
    assert "--storage.tsdb.retention.size=5GB" in args


def test_reload_keeps_process_and_data(host) -> None:
    _poll("samples of the node target", lambda: _query(host, NODE_SAMPLES))
    before = float(_query(host, NODE_SAMPLES)[0]["value"][1])
    pid = host.check_output("pidof prometheus")
    reloads = float(_query(host, RELOAD_TS)[0]["value"][1])
    host.check_output("systemctl reload prometheus")

    def reloaded() -> bool:
        result = _query(host, RELOAD_TS)
        return bool(result) and float(result[0]["value"][1]) > reloads

    _poll("a successful config reload", reloaded)
    assert host.check_output("pidof prometheus") == pid, "reload restarted the process"
    after = float(_query(host, NODE_SAMPLES)[0]["value"][1])
    assert after >= before, f"samples lost across the reload: {before} -> {after}"
    ok = _query(host, 'prometheus_config_last_reload_successful{instance="127.0.0.1:9090"}')
    assert ok[0]["value"][1] == "1"
