"""The `Idempotency-Key` request header (IETF draft-ietf-httpapi-idempotency-key-header):
its syntax, and the fingerprint that tells a retry from a different request.

The published policy (app/README.md, "Idempotent submission"):

- The key is a Structured Field string (RFC 8941), as the draft says:
  `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`; the same
  characters without quotes are accepted too, as payment APIs do. Either way
  it is 16 to 255 of `A-Z a-z 0-9 - _ . ~ : + / =` (a UUID, a ULID, 128 random
  bits in hex or base64). One `Idempotency-Key` field per request.
- The fingerprint is the SHA-256 of the job as validated (kind, and params with
  defaults filled in), so key order, white space and `1` versus `1.0` do not
  make a retry look like a different request.

Storage, uniqueness across processes and expiry are the queue's (`queue.py`);
the answers (202 replay, 422, 400) are the API's (`api.py`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MIN_LENGTH = 16
MAX_LENGTH = 255
_KEY = re.compile(rf"[A-Za-z0-9._~:+/=-]{{{MIN_LENGTH},{MAX_LENGTH}}}")


class BadKey(ValueError):
    """The request's Idempotency-Key field is malformed (or given more than once)."""


def parse(values: list[str]) -> str | None:
    """The key from the request's `Idempotency-Key` field values; None without one."""
    if not values:
        return None
    if len(values) > 1:
        raise BadKey(f"{HEADER} must be sent once, not {len(values)} times")
    raw = values[0].strip()
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not _KEY.fullmatch(key):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise BadKey(
            f"{HEADER} must be {MIN_LENGTH} to {MAX_LENGTH} characters of"
            f" A-Z a-z 0-9 - _ . ~ : + / =, optionally in double quotes (a UUID fits),"
            f" not {shown!r}"
        )
    return key


def fingerprint(kind: str, params: dict[str, Any]) -> str:
    """SHA-256 (hex) of the validated job: equal for every retry of the same request."""
    canonical = json.dumps({"kind": kind, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
