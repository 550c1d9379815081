"""A real nginx on loopback for the unit tests that judge the site's maps with
nginx's own PCRE and map semantics, not with a copy of them in Python
(Debian's nginx, in system-packages.txt)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def loopback_nginx(prefix: Path, http: str, location: str) -> Iterator[str]:
    """nginx with `http` (map blocks and the like) in its http block and one server on
    a free loopback port whose `location /` is `location`; yields the server's URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (prefix / "nginx.conf").write_text(
        f"daemon off;\npid {prefix}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n"
        f"access_log off;\nclient_body_temp_path {prefix};\nproxy_temp_path {prefix};\n"
        f"fastcgi_temp_path {prefix};\nuwsgi_temp_path {prefix};\nscgi_temp_path {prefix};\n"
        f"{http}"
        f"server {{\n listen 127.0.0.1:{port};\n location / {{ {location} }}\n}}\n}}\n"
    )
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, f"nginx did not start with:\n{http}"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
