"""Make the repository's plugins importable and run modules' main() in-process."""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
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


# --- a Docker engine on a Unix socket, read-only ----------------------------------


class FakeDocker(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Docker's API for reading containers: ``containers`` maps a name to its
    ``docker inspect`` document; the list filters by label as Docker does. A
    container named in ``restarting`` restarts before each time it is read (a
    crash loop). ``path`` is the socket."""

    daemon_threads = True
    path: str
    containers: dict[str, dict[str, Any]]
    restarting: set[str]
    seen: list[str]


class DockerHandler(BaseHTTPRequestHandler):
    server: FakeDocker

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        url = urllib.parse.urlsplit(self.path)
        docs = self.server.containers
        body: Any
        if url.path == "/containers/json":
            wanted = json.loads(urllib.parse.parse_qs(url.query)["filters"][0])["label"]
            body = [
                {
                    "Id": doc["Id"],
                    "Names": [doc["Name"]],
                    "Image": doc["Config"]["Image"],
                    "ImageID": doc["Image"],
                    "Labels": doc["Config"]["Labels"],
                    "State": "running" if doc["State"]["Running"] else "exited",
                }
                for doc in docs.values()
                if all(
                    doc["Config"]["Labels"].get(k) == v
                    for k, v in (label.split("=", 1) for label in wanted)
                )
            ]
        else:
            key = urllib.parse.unquote(url.path.split("/")[2])
            found = [d for n, d in docs.items() if key in (n, d["Id"])]
            if not found:
                self.send_error(404)
                return
            body = found[0]
            if body["Name"].lstrip("/") in self.server.restarting:
                body["RestartCount"] += 1
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def docker_doc(
    name: str, color: str, service: str, restarts: int = 0, running: bool = True
) -> dict[str, Any]:
    """A container's ``docker inspect`` document with the role's labels."""
    return {
        "Id": f"id-{name}",
        "Name": f"/{name}",
        "Image": "sha256:i",
        "RestartCount": restarts,
        "Config": {
            "Image": "img",
            "Labels": {
                "org.archibald.app": "archibald",
                "org.archibald.color": color,
                "org.archibald.service": service,
            },
        },
        "State": {"Running": running, "Restarting": False, "StartedAt": "2025-01-01T00:00:00Z"},
    }


@pytest.fixture
def docker(tmp_path: Path) -> Iterator[FakeDocker]:
    path = str(tmp_path / "docker.sock")
    server = FakeDocker(path, DockerHandler)
    server.path, server.containers, server.restarting, server.seen = path, {}, set(), []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
