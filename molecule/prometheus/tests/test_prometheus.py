"""Verify role `prometheus`: loopback only, targets up, retention flags live, reload keeps data."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import pytest

from harness.wait import until

API = "http://127.0.0.1:9090/api/v1"
# Our own series only: Debian's package starts Prometheus with its default
# configuration (targets localhost:9090 and :9100) before the role replaces it.
RELOAD_TS = 'prometheus_config_last_reload_success_timestamp_seconds{instance="127.0.0.1:9090"}'
NODE_SAMPLES = 'count_over_time(up{job="node", instance="127.0.0.1:9100"}[1h])'
EXPECTED_JOBS = {"archibald", "node", "nginx", "prometheus", "blackbox_exporter", "blackbox"}
# The probed sites of converge.yml: certificates that end in 7 and 90 days.
SEVEN = "https://127.0.0.1:8407/health"
NINETY = "https://127.0.0.1:8490/health"


def _get(host, path: str) -> Any:
    out = host.check_output(f"curl -fsS --max-time 5 '{API}/{path}'")
    return json.loads(out)["data"]


# Every wait goes through harness/wait.py; this file's default bound and interval.
_poll = partial(until, timeout=90, interval=1)


def _query(host, expr: str) -> list[dict[str, Any]]:
    out = host.check_output(
        f"curl -fsS --max-time 5 -G '{API}/query' --data-urlencode 'query={expr}'"
    )
    return json.loads(out)["data"]["result"]


@pytest.mark.parametrize(
    "service",
    [
        "prometheus",
        "prometheus-nginx-exporter",
        "prometheus-node-exporter",
        "prometheus-blackbox-exporter",
    ],
)
def test_services_enabled_and_running(host, service: str) -> None:
    unit = host.service(service)
    assert unit.is_enabled
    assert unit.is_running


@pytest.mark.parametrize("port", [9090, 9100, 9113, 9115])
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


def _alerts(host, name: str) -> list[dict[str, Any]]:
    return [a for a in _get(host, "alerts")["alerts"] if a["labels"]["alertname"] == name]


def _value(host, expr: str) -> float | None:
    result = _query(host, expr)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.parametrize(("url", "days"), [(SEVEN, 7), (NINETY, 90)])
def test_probe_sees_status_tls_and_certificate_expiry(host, url: str, days: int) -> None:
    sel = f'job="blackbox", instance="{url}"'
    _poll(f"a successful probe of {url}", lambda: _value(host, f"probe_success{{{sel}}}") == 1)
    assert _value(host, f"probe_http_status_code{{{sel}}}") == 200
    assert _query(host, f'probe_tls_version_info{{{sel}, version=~"TLS 1.[23]"}}')
    left = _value(host, f"probe_ssl_earliest_cert_expiry{{{sel}}} - time()")
    assert left is not None and abs(left / 86400 - days) < 1, f"{url}: {left} s left"
    duration = _value(host, f"probe_duration_seconds{{{sel}}}")
    print(f"\n[blackbox] {url}: TLS ok, {left / 86400:.1f} days left, {duration:.3f} s probe")


def test_certificate_ending_in_7_days_alerts_and_90_days_does_not(host) -> None:
    firing = _poll(
        "CertificateExpiring for the 7-day certificate",
        lambda: [a for a in _alerts(host, "CertificateExpiring") if a["state"] == "firing"],
    )
    assert {(a["labels"]["instance"], a["labels"]["severity"]) for a in firing} == {
        (SEVEN, "warning")
    }, firing


def test_site_down_fires_when_nginx_stops_and_clears_after(host) -> None:
    assert not _alerts(host, "SiteDown"), "SiteDown before anything was stopped"
    host.check_output("systemctl stop nginx")
    try:
        started = time.monotonic()
        firing = _poll(
            "SiteDown for both probed sites",
            lambda: (
                len([a for a in _alerts(host, "SiteDown") if a["state"] == "firing"]) == 2
                and _alerts(host, "SiteDown")
            ),
        )
        fired = time.monotonic() - started
        assert {a["labels"]["instance"] for a in firing} == {SEVEN, NINETY}
    finally:
        host.check_output("systemctl start nginx")
    _poll("SiteDown to clear", lambda: not _alerts(host, "SiteDown"))
    print(
        f"\n[blackbox] SiteDown fired {fired:.0f} s after nginx stopped (for: 15s here, 2m shipped)"
    )


@pytest.mark.parametrize(
    ("unit", "limit"), [("prometheus", 2**30), ("prometheus-blackbox-exporter", 64 * 2**20)]
)
def test_memory_limits_are_live(host, unit: str, limit: int) -> None:
    assert host.check_output(f"systemctl show -p MemoryMax --value {unit}") == str(limit)


def test_footprint_of_the_exporters(host) -> None:
    rss = {
        job: _value(host, f'process_resident_memory_bytes{{job="{job}"}}')
        for job in ("prometheus", "blackbox_exporter")
    }
    series = _value(host, "prometheus_tsdb_head_series")
    print(
        "\n[footprint] "
        + ", ".join(f"{job} {(v or 0) / 2**20:.1f} MiB RSS" for job, v in rss.items())
        + f"; {int(series or 0)} series in the head"
    )
    assert all(rss.values())
