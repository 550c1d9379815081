"""scripts/image-digest.py reads a tag's digest from a registry the way ghcr.io
serves it: a 401 with a bearer challenge, a token for the actor's token, then
the manifest's Docker-Content-Digest."""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from httpstub import serving

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_digest", ROOT / "scripts/image-digest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


image_digest = _script()


@pytest.fixture
def registry() -> Iterator[str]:
    basic = "Basic " + base64.b64encode(b"actor:gh-token").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != basic:
                self.send_response(403)
                self.end_headers()
                return
            body = json.dumps({"token": "registry-token"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            port = self.server.server_address[1]  # type: ignore[index]
            if self.headers.get("Authorization") != "Bearer registry-token":
                self.send_response(401)
                self.send_header(
                    "WWW-Authenticate",
                    f'Bearer realm="http://127.0.0.1:{port}/token",service="reg",'
                    'scope="repository:owner/app:pull"',
                )
            elif self.path == "/v2/owner/app/manifests/abc":
                self.send_response(200)
                self.send_header("Docker-Content-Digest", DIGEST)
            else:
                self.send_response(404)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler) as port:
        yield f"127.0.0.1:{port}"


def test_digest_through_a_bearer_challenge(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_USER", "actor")
    monkeypatch.setenv("REGISTRY_PASSWORD", "gh-token")
    assert image_digest.digest_of(f"{registry}/owner/app:abc") == DIGEST


def test_missing_tag_exits_3(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_USER", "actor")
    monkeypatch.setenv("REGISTRY_PASSWORD", "gh-token")
    assert image_digest.main([f"{registry}/owner/app:nope"]) == 3


def test_wrong_credentials_say_what_to_set(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_USER", "actor")
    monkeypatch.setenv("REGISTRY_PASSWORD", "wrong")
    with pytest.raises(image_digest.DigestError, match="set REGISTRY_USER and REGISTRY_PASSWORD"):
        image_digest.digest_of(f"{registry}/owner/app:abc")


@pytest.mark.parametrize("reference", ["app:v1", "owner/app:v1", "ghcr.io/owner/app"])
def test_references_without_registry_or_tag_are_refused(reference: str) -> None:
    with pytest.raises(image_digest.DigestError, match="is not <registry>/<repository>:<tag>"):
        image_digest.split(reference)
