"""Job kinds: how their parameters are validated and how they run.

- `sleep`: lasts `seconds` (at most APP_JOB_MAX_S), sleeping and burning
  `cpu` (fraction 0..0.5, default 0.1) of one core in short slices.
- `fail`: fails on purpose after `seconds` (default 0), with `message`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

KINDS = ("sleep", "fail")
_SLICE_S = 0.02


class ValidationError(ValueError):
    """A request field is invalid; `field` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class JobFailed(RuntimeError):
    """A job failed (the `fail` kind raises it on purpose)."""


def _number(params: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"params.{key}", "must be a number")
    if not low <= value <= high:
        raise ValidationError(f"params.{key}", f"must be between {low:g} and {high:g}")
    return float(value)


def validate(body: Any, job_max_s: float) -> tuple[str, dict[str, Any]]:
    """Check a submission body; return (kind, normalised params) or raise ValidationError."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - {"kind", "params"})
    if unknown:
        raise ValidationError(unknown[0], "unknown field")
    kind = body.get("kind")
    if kind is None:
        raise ValidationError("kind", "is required")
    if kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise ValidationError("params", "must be a JSON object")
    allowed = {"sleep": {"seconds", "cpu"}, "fail": {"seconds", "message"}}[kind]
    extra = sorted(set(params) - allowed)
    if extra:
        raise ValidationError(f"params.{extra[0]}", f"unknown parameter for kind {kind}")
    if kind == "sleep":
        if "seconds" not in params:
            raise ValidationError("params.seconds", "is required")
        return kind, {
            "seconds": _number(params, "seconds", 0, 0, job_max_s),
            "cpu": _number(params, "cpu", 0.1, 0, 0.5),
        }
    message = params.get("message", "failed on purpose")
    if not isinstance(message, str) or len(message) > 200:
        raise ValidationError("params.message", "must be a string of at most 200 characters")
    return kind, {"seconds": _number(params, "seconds", 0, 0, job_max_s), "message": message}


async def run(kind: str, params: dict[str, Any], job_max_s: float) -> dict[str, Any]:
    """Run one job; return its result or raise JobFailed."""
    seconds = min(float(params.get("seconds", 0)), job_max_s)
    if kind == "sleep":
        burned = await _sleep_and_burn(seconds, float(params.get("cpu", 0.1)))
        return {"slept_s": round(seconds, 3), "cpu_s": round(burned, 3)}
    if kind == "fail":
        await asyncio.sleep(seconds)
        raise JobFailed(str(params.get("message", "failed on purpose")))
    raise JobFailed(f"unknown kind {kind}")


async def _sleep_and_burn(seconds: float, cpu: float) -> float:
    """Last `seconds`, spending about `cpu` of that time on the CPU in short slices."""
    start = time.monotonic()
    deadline = start + seconds
    burned = 0.0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return burned
        burn_until = min(now + _SLICE_S * cpu, deadline)
        x = 0
        while time.monotonic() < burn_until:
            x += 1
        burned += time.monotonic() - now
        await asyncio.sleep(max(0.0, min(_SLICE_S * (1 - cpu), deadline - time.monotonic())))
