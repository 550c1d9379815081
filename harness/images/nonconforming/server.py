"""A server that breaks the app contract on purpose (see the Dockerfile)."""

import http.server
import os
import signal


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body = b"OK\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)


signal.signal(signal.SIGTERM, signal.SIG_IGN)
port = int(os.environ.get("APP_PORT", "8000"))
http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
