#!/usr/bin/env python3
"""Stand-in upstream for the nginx scenario: answers like one colour of the app.

Usage: standin.py PORT... - one process serves every port on 127.0.0.1. Every
GET answers 200 with X-App-Color/X-App-Version headers and a JSON body naming
the port, the path and the request headers it received. A path ending in /slow
first touches /run/archibald-standin/slow-PORT and then takes SLOW_S seconds,
so a test can hold a request in flight. A POST reads its body and appends
its size to /run/archibald-standin/posts-PORT, so a test can tell whether a
request reached the upstream at all. `?as=html`, `as=js` or `as=css` in the
query answers with that media type instead of JSON (for compression tests).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SLOW_S = 4.0
MEDIA_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}


def make_handler(port: int) -> type[BaseHTTPRequestHandler]:
    marker = Path(f"/run/archibald-standin/slow-{port}")
    posts = Path(f"/run/archibald-standin/posts-{port}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keepalive, as nginx's upstream keepalive expects
        # Headers and body are two writes: without TCP_NODELAY, Nagle and
        # delayed ACKs add 40 ms to every answer on a keepalive connection.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            size = len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with posts.open("a") as log:
                log.write(f"{size}\n")
            self.do_GET()

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/slow"):
                marker.touch()
                time.sleep(SLOW_S)
            body = json.dumps(
                {"port": port, "path": self.path, "headers": dict(self.headers.items())}
            ).encode()
            query = parse_qs(urlsplit(self.path).query)
            media = MEDIA_TYPES.get(query.get("as", [""])[0], "application/json")
            self.send_response(200)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-App-Color", "blue")
            self.send_header("X-App-Version", "standin")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main(argv: list[str]) -> int:
    servers = []
    for port in map(int, argv[1:]):
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(port))
        server.daemon_threads = True
        servers.append(server)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
