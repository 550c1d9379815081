#!/usr/bin/env python3
"""Measure the keep-alive race of nginx's graceful reload for writes.

Starts a private nginx (this machine's package, its own prefix, TLS on
127.0.0.1 only) that answers POST /api/jobs with 202 itself, so only the edge
is measured. While POST clients of harness/postload.py run at a fixed rate, it
reloads nginx `--reloads` times, and prints per edge setting how many
submissions got no answer, per 10,000. Each setting is one variant of the
server block; the same load and reload count run against each.

  variants: keepalive   HTTP/1.1 keep-alive, nginx's defaults (what the role ships)
            hint        the same, with a Keep-Alive: timeout= header
            no-reuse    keepalive_timeout 0 on the write path: one connection per POST
            http2       the same load over HTTP/2 (hey -h2: httpcore mishandles GOAWAY)

Bounded: loopback only, at most --seconds of load per variant.
Usage: scripts/bench-reload-race.py [--rate 400] [--reloads 20] [--seconds 30]
Needs nginx, openssl and hey (Debian packages); runs as any user.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import postload

PORT = 18500
ANSWER = """return 202 '{"id": "1"}';"""
VARIANTS = {
    "keepalive": ("", False),
    "hint": ("keepalive_timeout 75s 60s;", False),
    "no-reuse": (f"location = /api/jobs {{ keepalive_timeout 0; {ANSWER} }}", False),
    "http2": ("", True),
}


def config(prefix: Path, extra: str) -> str:
    return f"""
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type application/json;
    server {{
        listen 127.0.0.1:{PORT} ssl http2;
        ssl_certificate {prefix}/cert.pem;
        ssl_certificate_key {prefix}/key.pem;
        {extra}
        location / {{ {ANSWER} }}
    }}
}}
"""


def measure(
    name: str, rate: float, reloads: int, seconds: float, prefix: Path
) -> dict[str, object]:
    extra, http2 = VARIANTS[name]
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix, extra))
    nginx = ["nginx", "-p", str(prefix), "-c", str(conf)]
    subprocess.run([*nginx, "-t", "-q"], check=True)
    subprocess.run(nginx, check=True)
    try:
        time.sleep(0.5)
        url = f"https://127.0.0.1:{PORT}/api/jobs"
        writer = postload.Writer(name, url, rate)
        load = postload.WriteLoad([writer], seconds, verify=False)
        workers = 8
        h2 = (
            subprocess.Popen(
                [
                    "hey",
                    "-h2",
                    "-z",
                    f"{seconds:.0f}s",
                    "-c",
                    str(workers),
                    "-q",
                    str(max(1, round(rate / workers))),
                    "-m",
                    "POST",
                    "-d",
                    "{}",
                    url,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            if http2
            else None
        )
        if not h2:
            load.start()
        time.sleep(2)
        gap = max(0.2, (seconds - 4) / max(1, reloads))
        for _ in range(reloads):
            subprocess.run([*nginx, "-s", "reload"], check=True, capture_output=True)
            time.sleep(gap)
        if h2:
            out, _ = h2.communicate(timeout=seconds + 60)
            codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
            errors = sum(
                int(n)
                for n in re.findall(r"^\s*\[(\d+)\]", out.partition("Error distribution:")[2], re.M)
            )
            sent = sum(codes.values()) + errors
            failed = sent - codes.get(202, 0)
            return {
                "sent": sent,
                "failed": failed,
                "per_10k": 10_000 * failed / max(1, sent),
                "errors": out.partition("Error distribution:")[2].strip()[:300],
            }
        load.join(seconds + 30)
        load.stop()
        return postload.summary(writer)
    finally:
        subprocess.run([*nginx, "-s", "stop"], check=False)
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    for tool in ("nginx", "openssl"):
        if not shutil.which(tool):
            print(f"bench: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="reload-race-") as tmp:
        prefix = Path(tmp)
        (prefix / "logs").mkdir()
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
                str(prefix / "key.pem"),
                "-out",
                str(prefix / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )
        print(
            f"{'variant':<10} {'sent':>6} {'failed':>6} {'per 10,000':>10}  errors "
            f"({args.rate:.0f} POST/s, {args.reloads} reloads in {args.seconds:.0f} s)"
        )
        for name in args.variants:
            r = measure(name, args.rate, args.reloads, args.seconds, prefix)
            print(
                f"{name:<10} {r['sent']:>6} {r['failed']:>6} {r['per_10k']:>10.1f}  {r['errors']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
