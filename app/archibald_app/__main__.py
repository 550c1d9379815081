"""Command line: `python -m archibald_app backend|frontend|healthcheck`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request

from .config import ConfigError, from_env
from .lifecycle import SERVICES, serve


def healthcheck(timeout: float = 3.0) -> int:
    """Exit 0 when this container's /health answers 200 (Docker HEALTHCHECK)."""
    port = os.environ.get("APP_PORT", "8000") or "8000"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as answer:
            body = json.loads(answer.read())
            print(json.dumps(body))
            return 0 if answer.status == 200 and body.get("status") == "ok" else 1
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: HTTP {exc.code}")
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}")
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m archibald_app", description=__doc__)
    parser.add_argument("command", choices=[*SERVICES, "healthcheck"])
    args = parser.parse_args(argv)
    if args.command == "healthcheck":
        return healthcheck()
    try:
        cfg = from_env(check_db=args.command == "backend")
    except ConfigError as exc:
        print(f"archibald_app: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(cfg, args.command))


if __name__ == "__main__":
    sys.exit(main())
