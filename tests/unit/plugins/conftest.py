"""Make the repository's plugins importable and run modules' main() in-process."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ansible.module_utils
import pytest
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[3]
for folder in ("library", "filter_plugins"):
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))
# The modules import the repository's module_utils as Ansible packs them:
# ansible.module_utils.<name> (ansible.cfg: module_utils = ./module_utils).
if str(REPO / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO / "module_utils"))

RunModule = Callable[..., dict[str, Any]]

HEALTHY = {"status": "ok", "color": "green", "version": "v2", "checks": {"db": "ok"}}
GREEN_V2 = {"color": "green", "version": "v2"}


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True
    hits: Counter[str]


class Handler(BaseHTTPRequestHandler):
    """Answers by path: /healthy, /draining, /flap, /late, /slow, /wrong, /text, /host."""

    server: HealthServer

    def do_GET(self) -> None:
        path = self.path
        self.server.hits[path] += 1
        hit = self.server.hits[path]
        status, body = 200, dict(HEALTHY)
        if path == "/draining":
            status, body = 503, {"status": "draining", "color": "green", "version": "v2"}
        elif path == "/flap":
            status = 200 if hit % 2 else 503
        elif path == "/late":
            status = 200 if hit > 2 else 503
        elif path == "/slow":
            time.sleep(1.0)
        elif path == "/wrong":
            body["version"] = "v1"
        elif path == "/host":
            status = 200 if self.headers.get("Host") == "app.example" else 404
        payload = b"ok" if path == "/text" else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def server() -> Iterator[HealthServer]:
    httpd = HealthServer(("127.0.0.1", 0), Handler)
    httpd.hits = Counter()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server: HealthServer) -> str:
    server.hits.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_module(capsys: pytest.CaptureFixture[str]) -> RunModule:
    """Run a module's main() with arguments; return its JSON result (``failed`` on failure)."""

    def _run(
        main: Callable[[], None], args: dict[str, Any], check: bool = False, diff: bool = False
    ) -> dict[str, Any]:
        capsys.readouterr()
        full = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
        with patch_module_args(full), pytest.raises(SystemExit):
            main()
        result: dict[str, Any] = json.loads(capsys.readouterr().out)
        return result

    return _run
