"""JSON-lines logging on stdout: one object per line, one `event` per step."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO


class EventLog:
    """Writes `{"ts", "event", ...context, ...fields}` lines to a stream."""

    def __init__(self, stream: TextIO | None = None, **context: Any) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._context = dict(context)
        self._lock = threading.Lock()

    def bind(self, **context: Any) -> None:
        """Add fields that every later line carries (service, colour, instance...)."""
        self._context.update(context)

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Write one line for `event` with the given fields."""
        now = time.time()
        record: dict[str, Any] = {
            "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "event": event,
        }
        record.update(self._context)
        record.update(fields)
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
