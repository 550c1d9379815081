"""Unit tests for filter_plugins/accessories.py (the accessories role's checks and scrape job)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from accessories import FilterModule, accessories_problems, accessories_scrape_configs
from ansible.errors import AnsibleFilterError

APP_PORTS = {"blue": {"backend": 8101, "frontend": 8102}, "green": {"backend": 8201}}
RESERVED = [22, 80, 443, 9090]
REDIS = {
    "image": "registry.test/redis:7",
    "port": 6379,
    "command": ["redis-server", "--bind", "127.0.0.1"],
    "volumes": {"data": "/data"},
    "env": {"MODE": "cache"},
    "health": {"cmd": ["redis-cli", "ping"], "interval": "5s", "retries": 3},
    "memory": "256m",
    "stop_timeout": 10,
    "user": "redis",
    "cap_add": ["SETUID", "CAP_SETGID"],
    "read_only": True,
    "tmpfs": ["/run/redis:size=16m", "/tmp"],
    "pids": 64,
}
EXPORTER = {"image": "registry.test/redis-exporter:1", "port": 9121, "metrics": {"port": 9121}}


def test_a_good_declaration_has_no_problems() -> None:
    services = {"redis": REDIS, "redis-exporter": EXPORTER}
    assert accessories_problems(services, RESERVED, APP_PORTS) == []
    assert accessories_problems({}, RESERVED, APP_PORTS) == []
    assert accessories_problems(None) == []


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ({"Redis": REDIS}, r"accessories_services\.Redis: the name must be"),
        ({"r": REDIS}, r"accessories_services\.r: the name must be"),
        ({"redis": "redis:7"}, r"redis must be a mapping"),
        ({"redis": {**REDIS, "helth": {}}}, r"unknown field\(s\) helth"),
        ({"redis": {"port": 6379}}, r"redis\.image is missing"),
        ({"redis": {**REDIS, "port": 70000}}, r"redis\.port must be the loopback port"),
        ({"redis": {**REDIS, "port": True}}, r"redis\.port must be the loopback port"),
        ({"redis": {**REDIS, "command": "redis-server"}}, r"redis\.command must be a list"),
        ({"redis": {**REDIS, "volumes": {"data": "data"}}}, r"redis\.volumes\.data: .*absolute"),
        ({"redis": {**REDIS, "volumes": ["/data"]}}, r"redis\.volumes must map"),
        ({"redis": {**REDIS, "env": {"MODE": True}}}, r"redis\.env\.MODE: .*quote yes"),
        ({"redis": {**REDIS, "env": {"1X": "a"}}}, r"redis\.env\.1X"),
        ({"redis": {**REDIS, "health": {"interval": "5s"}}}, r"redis\.health needs cmd"),
        (
            {"redis": {**REDIS, "health": {"cmd": "x", "interval": "5"}}},
            r"health: interval invalid",
        ),
        ({"redis": {**REDIS, "health": {"cmd": "x", "retries": "a"}}}, r"health: retries invalid"),
        ({"redis": {**REDIS, "metrics": {"port": "x"}}}, r"redis\.metrics must be"),
        ({"redis": {**REDIS, "metrics": {"port": 9121, "path": "m"}}}, r"redis\.metrics must be"),
        ({"redis": {**REDIS, "memory": "lots"}}, r"redis\.memory must be a Docker memory size"),
        ({"redis": {**REDIS, "stop_timeout": "soon"}}, r"redis\.stop_timeout must be"),
        ({"redis": {**REDIS, "user": ""}}, r"redis\.user must be a user name"),
        ({"redis": {**REDIS, "cap_add": "ALL"}}, r"redis\.cap_add must list capability names"),
        ({"redis": {**REDIS, "cap_add": ["net_raw"]}}, r"redis\.cap_add must list"),
        ({"redis": {**REDIS, "read_only": "yes"}}, r"redis\.read_only must be true or false"),
        ({"redis": {**REDIS, "tmpfs": ["run"]}}, r"redis\.tmpfs must list writable"),
        ({"redis": {**REDIS, "pids": 0}}, r"redis\.pids must be"),
    ],
    ids=[
        "upper-case-name",
        "short-name",
        "not-a-mapping",
        "typo",
        "no-image",
        "port-range",
        "port-bool",
        "command-string",
        "volume-relative",
        "volumes-list",
        "env-bool",
        "env-name",
        "health-no-cmd",
        "health-interval",
        "health-retries",
        "metrics-port",
        "metrics-path",
        "memory",
        "stop-timeout",
        "user-empty",
        "cap-add-string",
        "cap-add-lower-case",
        "read-only-string",
        "tmpfs-relative",
        "pids-zero",
    ],
)
def test_each_bad_setting_is_named(services: dict[str, Any], expected: str) -> None:
    problems = accessories_problems(services, RESERVED, APP_PORTS)
    assert len(problems) == 1, problems
    assert re.search(expected, problems[0]), problems[0]


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        (
            {"redis": {**REDIS, "port": 8101}},
            r"redis\.port is 8101, which bluegreen_ports\.blue\.backend \(the app\) already uses",
        ),
        (
            {"redis": {**REDIS, "port": 9090}},
            r"redis\.port is 9090, which accessories_reserved_ports \(the rest of the stack\)",
        ),
        (
            {"a-db": {**REDIS, "port": 5432}, "b-cache": {**REDIS, "port": 5432}},
            r"b-cache\.port is 5432, which accessories_services\.a-db\.port already uses",
        ),
        (
            {"redis": REDIS, "exporter": {**EXPORTER, "metrics": {"port": 6379}}},
            r"redis\.port is 6379, which accessories_services\.exporter\.metrics\.port",
        ),
    ],
    ids=["app-port", "reserved-port", "two-services", "metrics-port"],
)
def test_a_port_taken_twice_names_both_settings(services: dict[str, Any], expected: str) -> None:
    problems = accessories_problems(services, RESERVED, APP_PORTS)
    assert len(problems) == 1, problems
    assert re.search(expected, problems[0]), problems[0]


def test_a_service_may_serve_its_metrics_on_its_own_port() -> None:
    service = {**REDIS, "metrics": {"port": 6379, "path": "/stats"}}
    assert accessories_problems({"redis": service}, RESERVED, APP_PORTS) == []


def test_bad_input_types() -> None:
    assert "must map a name to its settings" in accessories_problems(["redis"])[0]
    with pytest.raises(AnsibleFilterError, match="app_ports must be bluegreen_ports"):
        accessories_problems({}, [], ["8101"])
    with pytest.raises(AnsibleFilterError, match="expects accessories_services"):
        accessories_scrape_configs(["redis"])
    with pytest.raises(AnsibleFilterError, match=r"redis\.metrics\.port must be a port"):
        accessories_scrape_configs({"redis": {"metrics": {"port": "x"}}})


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ({}, []),
        (None, []),
        ({"redis": REDIS}, []),
        (
            {"redis": REDIS, "redis-exporter": EXPORTER},
            [
                {
                    "job_name": "accessories",
                    "static_configs": [
                        {
                            "targets": ["127.0.0.1:9121"],
                            "labels": {"accessory": "redis-exporter"},
                        }
                    ],
                }
            ],
        ),
        (
            {"db": {**REDIS, "metrics": {"port": 9187, "path": "/stats"}}},
            [
                {
                    "job_name": "accessories",
                    "static_configs": [
                        {
                            "targets": ["127.0.0.1:9187"],
                            "labels": {"accessory": "db", "__metrics_path__": "/stats"},
                        }
                    ],
                }
            ],
        ),
    ],
    ids=["none", "null", "no-metrics", "exporter", "own-path"],
)
def test_scrape_configs(services: Any, expected: list[dict[str, Any]]) -> None:
    assert accessories_scrape_configs(services) == expected


def test_the_filters_are_registered() -> None:
    assert set(FilterModule().filters()) == {"accessories_problems", "accessories_scrape_configs"}
