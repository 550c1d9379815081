"""Unit tests for module_utils/httpfetch.py: the modules' one GET, through
ansible.module_utils.urls, certificates checked unless the caller says not to."""

from __future__ import annotations

import datetime
import http.server
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.module_utils.httpfetch import fetch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# tests/unit's local HTTP server helper (tests/unit/httpstub.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from httpstub import serving


class Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/gone": 404, "/broken": 503}.get(self.path, 200)
        body = f"{status} {self.headers.get('X-Test', '-')}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(("path", "status"), [("/ok", 200), ("/gone", 404), ("/broken", 503)])
def test_http_errors_are_answers_too(path: str, status: int) -> None:
    with serving(Answers) as port:
        answer = fetch(f"http://127.0.0.1:{port}{path}", 2, {"X-Test": "hi"})
    assert answer == (status, f"{status} hi", None)


def test_the_body_is_cut_at_the_limit_unless_told() -> None:
    with serving(Answers) as port:
        assert fetch(f"http://127.0.0.1:{port}/ok", 2, limit=3)[1] == "200"
        assert fetch(f"http://127.0.0.1:{port}/ok", 2, limit=None)[1] == "200 -"


def test_no_answer_is_a_transport_error(closed_port: int) -> None:
    status, body, error = fetch(f"http://127.0.0.1:{closed_port}/ok", 1)
    assert (status, body) == (None, "")
    assert error is not None and error.startswith("no answer: ") and "refused" in error


def test_certificates_are_checked_by_default(tls_port: int) -> None:
    status, _body, error = fetch(f"https://127.0.0.1:{tls_port}/ok", 2)
    assert status is None and error is not None
    assert "certificate" in error.lower() or "ssl" in error.lower(), error
    assert fetch(f"https://127.0.0.1:{tls_port}/ok", 2, validate_certs=False) == (
        200,
        "200 -",
        None,
    )
