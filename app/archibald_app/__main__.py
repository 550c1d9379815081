"""Command line: `python -m archibald_app backend|frontend|healthcheck`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import healthcheck
from .config import ConfigError, from_env
from .lifecycle import SERVICES, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m archibald_app", description=__doc__)
    parser.add_argument("command", choices=[*SERVICES, "healthcheck"])
    args = parser.parse_args(argv)
    if args.command == "healthcheck":
        # The image's HEALTHCHECK runs archibald_app.healthcheck itself, without
        # importing the service; this spelling stays for people.
        return healthcheck.main()
    try:
        cfg = from_env(check_db=args.command == "backend")
    except ConfigError as exc:
        print(f"archibald_app: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(cfg, args.command))


if __name__ == "__main__":
    sys.exit(main())
