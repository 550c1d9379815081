"""Configuration from environment variables, typed and validated at start-up.

Every variable has a typed default. A bad value raises `ConfigError`, whose
message names the variable, the value and what was expected; `__main__` prints
it as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration variable has a value the application cannot use."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        super().__init__(f"invalid configuration: {name}={value!r}: expected {expected}")


@dataclass(frozen=True)
class Config:
    """The application's settings; see app/README.md for the table."""

    color: str = "dev"
    version: str = "dev"
    host: str = "0.0.0.0"
    port: int = 8000
    db_path: str = "/data/jobs.sqlite3"
    workers: int = 4
    drain_timeout_s: float = 60.0
    max_body_bytes: int = 65536
    lease_s: float = 30.0
    max_attempts: int = 3
    job_max_s: float = 30.0
    poll_interval_s: float = 0.2
    metrics_enabled: bool = True
    idempotency_ttl_s: float = 86400.0
    job_retention_s: float = 604800.0
    max_queued_jobs: int = 50000
    retention_interval_s: float = 60.0
    backend_url: str = ""
    fault_api_error_ratio: float = 0.0
    fault_unhealthy: bool = False
    fault_crash_after_s: float = 0.0


def _get(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return parse(raw)


def _int(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, f"an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise ConfigError(name, raw, f"an integer from {low} to {high}")
        return value

    return parse


def _float(name: str, low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    bound = f"a number {'>' if low_open else '>='} {low:.12g} and <= {high:.12g}"

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, bound) from None
        too_low = value <= low if low_open else value < low
        if value != value or too_low or value > high:  # NaN fails the first test
            raise ConfigError(name, raw, bound)
        return value

    return parse


def _bool(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(name, raw, "one of 1/0, true/false, yes/no, on/off")

    return parse


def _match(name: str, pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not pattern.match(raw):
            raise ConfigError(name, raw, what)
        return raw

    return parse


def _db_path(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parent = Path(raw).parent
        if raw.endswith("/") or not parent.is_dir():
            raise ConfigError(name, raw, "a file path in an existing directory")
        if not os.access(parent, os.W_OK):
            raise ConfigError(name, raw, "a file path in a directory this user can write")
        return raw

    return parse


def _url(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", raw):
            raise ConfigError(name, raw, "an http:// or https:// URL such as http://127.0.0.1:8000")
        return raw.rstrip("/")

    return parse


def from_env(env: Mapping[str, str] | None = None, *, check_db: bool = True) -> Config:
    """Build a Config from `env` (default: os.environ); raise ConfigError on a bad value."""
    env = os.environ if env is None else env
    cfg = _from_env(env, check_db)
    # A key must not outlive its job: a replay after the job was removed
    # would run the work a second time.
    if 0 < cfg.job_retention_s < cfg.idempotency_ttl_s:
        raise ConfigError(
            "APP_JOB_RETENTION_S",
            env.get("APP_JOB_RETENTION_S", ""),
            f"0 (keep every job) or at least APP_IDEMPOTENCY_TTL_S ({cfg.idempotency_ttl_s:g} s),"
            " so that no Idempotency-Key outlives its job",
        )
    return cfg


def _from_env(env: Mapping[str, str], check_db: bool) -> Config:
    d = Config()
    db_parse = _db_path("APP_DB_PATH") if check_db else str
    return Config(
        color=_get(
            env, "APP_COLOR", d.color, _match("APP_COLOR", _NAME_RE, "a lowercase name like blue")
        ),
        version=_get(
            env,
            "APP_VERSION",
            d.version,
            _match("APP_VERSION", _VERSION_RE, "1-64 characters of [A-Za-z0-9._+-]"),
        ),
        host=_get(env, "APP_HOST", d.host, str),
        port=_get(env, "APP_PORT", d.port, _int("APP_PORT", 1, 65535)),
        db_path=_get(env, "APP_DB_PATH", d.db_path, db_parse),
        workers=_get(env, "APP_WORKERS", d.workers, _int("APP_WORKERS", 1, 64)),
        drain_timeout_s=_get(
            env,
            "APP_DRAIN_TIMEOUT_S",
            d.drain_timeout_s,
            _float("APP_DRAIN_TIMEOUT_S", 0, 3600, low_open=True),
        ),
        max_body_bytes=_get(
            env, "APP_MAX_BODY_BYTES", d.max_body_bytes, _int("APP_MAX_BODY_BYTES", 64, 16777216)
        ),
        lease_s=_get(env, "APP_LEASE_S", d.lease_s, _float("APP_LEASE_S", 0.5, 3600)),
        max_attempts=_get(
            env, "APP_MAX_ATTEMPTS", d.max_attempts, _int("APP_MAX_ATTEMPTS", 1, 100)
        ),
        job_max_s=_get(env, "APP_JOB_MAX_S", d.job_max_s, _float("APP_JOB_MAX_S", 0, 3600)),
        poll_interval_s=_get(
            env,
            "APP_POLL_INTERVAL_S",
            d.poll_interval_s,
            _float("APP_POLL_INTERVAL_S", 0.01, 60),
        ),
        metrics_enabled=_get(
            env, "APP_METRICS_ENABLED", d.metrics_enabled, _bool("APP_METRICS_ENABLED")
        ),
        idempotency_ttl_s=_get(
            env,
            "APP_IDEMPOTENCY_TTL_S",
            d.idempotency_ttl_s,
            _float("APP_IDEMPOTENCY_TTL_S", 1, 2592000),
        ),
        job_retention_s=_get(
            env,
            "APP_JOB_RETENTION_S",
            d.job_retention_s,
            _float("APP_JOB_RETENTION_S", 0, 31536000),
        ),
        max_queued_jobs=_get(
            env,
            "APP_MAX_QUEUED_JOBS",
            d.max_queued_jobs,
            _int("APP_MAX_QUEUED_JOBS", 0, 100000000),
        ),
        retention_interval_s=_get(
            env,
            "APP_RETENTION_INTERVAL_S",
            d.retention_interval_s,
            _float("APP_RETENTION_INTERVAL_S", 0.05, 86400),
        ),
        backend_url=_get(env, "APP_BACKEND_URL", d.backend_url, _url("APP_BACKEND_URL")),
        fault_api_error_ratio=_get(
            env,
            "APP_FAULT_API_ERROR_RATIO",
            d.fault_api_error_ratio,
            _float("APP_FAULT_API_ERROR_RATIO", 0, 1),
        ),
        fault_unhealthy=_get(
            env, "APP_FAULT_UNHEALTHY", d.fault_unhealthy, _bool("APP_FAULT_UNHEALTHY")
        ),
        fault_crash_after_s=_get(
            env,
            "APP_FAULT_CRASH_AFTER_S",
            d.fault_crash_after_s,
            _float("APP_FAULT_CRASH_AFTER_S", 0, 86400),
        ),
    )
