#!/usr/bin/env python3
"""A real SMTP server and a real HTTP receiver on loopback that record what they get.

Used by the alertmanager scenario and the whole-stack alerting test, inside
the test host. Every request or mail is one JSON line:
  <out>/http.jsonl  {"time", "path", "body"}  (body parsed as JSON when it is)
  <out>/smtp.jsonl  {"time", "from", "to", "subject", "text"}
Usage: alert_sink.py --http 127.0.0.1:9199 --smtp 127.0.0.1:2525 --out /var/lib/alert-sink
"""

from __future__ import annotations

import argparse
import email
import email.policy
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

LOCK = threading.Lock()


def record(path: Path, entry: dict[str, Any]) -> None:
    with LOCK, path.open("a") as out:
        out.write(json.dumps(entry) + "\n")


class Mailbox:
    def __init__(self, out: Path) -> None:
        self.out = out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain",))
        record(
            self.out,
            {
                "time": time.time(),
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "subject": str(message["Subject"]),
                "text": part.get_content() if part is not None else "",
            },
        )
        return "250 OK"


def http_handler(out: Path) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            record(out, {"time": time.time(), "path": self.path, "body": body})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        do_PUT = do_POST

        def do_GET(self) -> None:
            record(out, {"time": time.time(), "path": self.path, "body": None})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", default="127.0.0.1:9199")
    parser.add_argument("--smtp", default="127.0.0.1:2525")
    parser.add_argument("--out", type=Path, default=Path("/var/lib/alert-sink"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    smtp_host, smtp_port = args.smtp.rsplit(":", 1)
    controller = Controller(
        Mailbox(args.out / "smtp.jsonl"), hostname=smtp_host, port=int(smtp_port)
    )
    controller.start()
    http_host, http_port = args.http.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer(
        (http_host, int(http_port)), http_handler(args.out / "http.jsonl")
    )
    try:
        server.serve_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
