"""Docker's HEALTHCHECK: `python -m archibald_app.healthcheck` exits 0 when this
container's /health answers 200 with status ok, 1 otherwise.

Docker runs it every interval inside the container, beside the service, and
counts a probe that outlives --timeout as a failure. So it imports the
standard library only: not the service (aiohttp, prometheus_client, the
lifecycle), which cost several times the probe itself and timed out at high
load. tests/test_healthcheck.py holds that.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0  # the Dockerfile's HEALTHCHECK --timeout


def probe(port: str, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """(exit code, the line to print) for http://127.0.0.1:<port>/health."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as answer:
            body = json.loads(answer.read())
            ok = answer.status == 200 and body.get("status") == "ok"
            return (0 if ok else 1), json.dumps(body)
    except urllib.error.HTTPError as exc:
        return 1, f"unhealthy: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return 1, f"unhealthy: {exc}"


def main() -> int:
    code, line = probe(os.environ.get("APP_PORT", "8000") or "8000")
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
