"""Configuration: typed defaults, and one clear line plus exit code 2 on a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from apptest_support import APP_DIR
from archibald_app.config import Config, ConfigError, from_env


def test_defaults(tmp_path: Path) -> None:
    cfg = from_env({"APP_DB_PATH": str(tmp_path / "j.db")})
    assert cfg == Config(db_path=str(tmp_path / "j.db"))
    assert (cfg.port, cfg.workers, cfg.drain_timeout_s, cfg.host) == (8000, 4, 60.0, "0.0.0.0")
    assert cfg.metrics_enabled is True
    assert cfg.fault_api_error_ratio == 0.0
    assert cfg.idempotency_ttl_s == 86400.0  # 24 hours


@pytest.mark.parametrize(
    ("name", "value", "attr", "expected"),
    [
        ("APP_COLOR", "green", "color", "green"),
        ("APP_VERSION", "1.2.3+abc", "version", "1.2.3+abc"),
        ("APP_PORT", "8081", "port", 8081),
        ("APP_WORKERS", "1", "workers", 1),
        ("APP_DRAIN_TIMEOUT_S", "2.5", "drain_timeout_s", 2.5),
        ("APP_METRICS_ENABLED", "false", "metrics_enabled", False),
        ("APP_METRICS_ENABLED", "ON", "metrics_enabled", True),
        ("APP_FAULT_API_ERROR_RATIO", "0.25", "fault_api_error_ratio", 0.25),
        ("APP_FAULT_UNHEALTHY", "1", "fault_unhealthy", True),
        ("APP_BACKEND_URL", "http://127.0.0.1:8000/", "backend_url", "http://127.0.0.1:8000"),
        ("APP_PORT", "", "port", 8000),
        ("APP_IDEMPOTENCY_TTL_S", "3600", "idempotency_ttl_s", 3600.0),
    ],
)
def test_good_values(tmp_path: Path, name: str, value: str, attr: str, expected: object) -> None:
    cfg = from_env({"APP_DB_PATH": str(tmp_path / "j.db"), name: value})
    assert getattr(cfg, attr) == expected


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("APP_PORT", "eighty", r"APP_PORT='eighty': expected an integer from 1 to 65535"),
        ("APP_PORT", "70000", r"APP_PORT='70000'"),
        ("APP_WORKERS", "0", r"APP_WORKERS='0': expected an integer from 1 to 64"),
        ("APP_DRAIN_TIMEOUT_S", "0", r"APP_DRAIN_TIMEOUT_S='0': expected a number > 0"),
        ("APP_DRAIN_TIMEOUT_S", "nan", r"APP_DRAIN_TIMEOUT_S='nan'"),
        ("APP_FAULT_API_ERROR_RATIO", "1.5", r"APP_FAULT_API_ERROR_RATIO='1.5'.*<= 1"),
        ("APP_METRICS_ENABLED", "maybe", r"APP_METRICS_ENABLED='maybe': expected one of 1/0"),
        ("APP_COLOR", "Blue!", r"APP_COLOR='Blue!': expected a lowercase name"),
        ("APP_VERSION", "a b", r"APP_VERSION='a b'"),
        ("APP_DB_PATH", "/nonexistent/dir/j.db", r"APP_DB_PATH=.*existing directory"),
        ("APP_BACKEND_URL", "backend:8000", r"APP_BACKEND_URL='backend:8000': expected an http"),
        ("APP_MAX_ATTEMPTS", "-1", r"APP_MAX_ATTEMPTS='-1'"),
        ("APP_IDEMPOTENCY_TTL_S", "0", r"APP_IDEMPOTENCY_TTL_S='0': expected a number >= 1"),
        ("APP_IDEMPOTENCY_TTL_S", "1day", r"APP_IDEMPOTENCY_TTL_S='1day'"),
        ("APP_IDEMPOTENCY_TTL_S", "2592001", r"APP_IDEMPOTENCY_TTL_S=.*<= 2592000"),
    ],
)
def test_bad_values(tmp_path: Path, name: str, value: str, match: str) -> None:
    env = {"APP_DB_PATH": str(tmp_path / "j.db"), name: value}
    with pytest.raises(ConfigError, match=match):
        from_env(env)


def test_bad_value_stops_the_process_with_one_line_and_code_2(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(APP_DIR),
        "APP_DB_PATH": str(tmp_path / "j.db"),
        "APP_WORKERS": "lots",
    }
    done = subprocess.run(
        [sys.executable, "-m", "archibald_app", "backend"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "archibald_app: invalid configuration: APP_WORKERS='lots': expected an integer from 1 to 64"
    ]
