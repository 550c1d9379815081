"""Verify role `nginx`: the only door - TLS, headers, routing, no /metrics, graceful reloads,
and the edge metrics that mtail reads from nginx's edge log."""

from __future__ import annotations

import json
import re
import time
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.wait import until

if TYPE_CHECKING:
    from testinfra.host import Host

NAME = "localhost"
CA = f"/etc/ssl/archibald/{NAME}.crt"
# Talk to the host's nginx by name so the self-signed certificate is verified.
CURL = f"curl -sS --max-time 10 --resolve {NAME}:443:127.0.0.1 --cacert {CA}"
BASE = f"https://{NAME}"
BACKEND, FRONTEND, GRAFANA, PROMETHEUS = 8101, 8102, 3000, 9090
MTAIL = "127.0.0.1:3903"
EDGE_LOG = "/var/log/nginx/edge.log"
UPSTREAMS = "/etc/nginx/archibald/upstreams.conf"


def _full_site(host: Host) -> bool:
    """deb13 converges with /grafana/ and /prometheus/; deb12 with the defaults."""
    return "deb13" in host.backend.get_hostname()


# Every wait goes through harness/wait.py; this file's default bound and interval.
_poll = partial(until, timeout=20, interval=0.3)


def _get(host: Host, path: str, extra: str = "") -> tuple[int, dict[str, str], str]:
    """GET through nginx over HTTPS: status, headers (lower-case names), body."""
    out = host.check_output(f"{CURL} -D - {extra} '{BASE}{path}'")
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def _upstream(host: Host, path: str, extra: str = "") -> dict[str, Any]:
    """The stand-in upstream's view of a request that nginx passed on."""
    status, _, body = _get(host, path, extra)
    assert status == 200, (path, status, body)
    return json.loads(body)


def _master_pid(host: Host) -> str:
    return host.file("/run/nginx.pid").content_string.strip()


def _serving(host: Host) -> bool:
    return host.run(f"{CURL} -f -o /dev/null '{BASE}/api/alive'").rc == 0


def test_nginx_enabled_and_running(host: Host) -> None:
    nginx = host.service("nginx")
    assert nginx.is_enabled
    assert nginx.is_running


@pytest.mark.parametrize("port", [80, 443])
def test_listens_publicly_on_80_and_443(host: Host, port: int) -> None:
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_stub_status_only_on_loopback(host: Host) -> None:
    assert host.socket("tcp://127.0.0.1:8080").is_listening
    assert not host.socket("tcp://0.0.0.0:8080").is_listening
    assert not host.socket("tcp://:::8080").is_listening
    out = host.check_output("curl -fsS --max-time 5 http://127.0.0.1:8080/stub_status")
    assert out.startswith("Active connections:")
    other = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/")
    assert other.stdout == "404"


def test_configuration_files(host: Host) -> None:
    conf = host.file("/etc/nginx/nginx.conf")
    assert conf.mode == 0o644
    assert "Ansible managed" in conf.content_string
    assert "worker_shutdown_timeout 75s;" in conf.content_string
    assert "server_tokens off;" in conf.content_string
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    enabled = host.file("/etc/nginx/sites-enabled/archibald.conf")
    assert enabled.is_symlink
    assert enabled.linked_to == "/etc/nginx/sites-available/archibald.conf"
    upstreams = host.file("/etc/nginx/archibald/upstreams.conf").content_string
    assert (
        "upstream archibald_backend_initial { server 127.0.0.1:8101 max_fails=0; keepalive 32; }"
        in upstreams
    )
    assert (
        "upstream archibald_frontend_initial { server 127.0.0.1:8102 max_fails=0; keepalive 32; }"
        in upstreams
    )
    assert "map $request_id $archibald_color { default initial; }" in upstreams
    key = host.file(f"/etc/ssl/archibald/{NAME}.key")
    assert key.mode == 0o600
    assert key.user == "root"
    host.check_output("nginx -t -q")


@pytest.mark.parametrize("asked", [NAME, "evil.example"])
def test_http_redirects_to_https_on_the_configured_name(host: Host, asked: str) -> None:
    """Any Host header, forged ones included, is sent to the site's own name."""
    out = host.check_output(
        "curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "
        f"-H 'Host: {asked}' 'http://127.0.0.1/api/x?a=1'"
    )
    assert out == f"301 https://{NAME}/api/x?a=1"


def test_acme_challenge_served_over_http(host: Host) -> None:
    token = uuid.uuid4().hex
    path = f"/var/www/letsencrypt/.well-known/acme-challenge/{token}"
    host.check_output(f"mkdir -p $(dirname {path}) && echo {token}-ok > {path}")
    try:
        out = host.check_output(
            f"curl -fsS -H 'Host: {NAME}' http://127.0.0.1/.well-known/acme-challenge/{token}"
        )
        assert out == f"{token}-ok"
    finally:
        host.run(f"rm -f {path}")


def test_https_sends_security_headers(host: Host) -> None:
    status, headers, _ = _get(host, "/")
    assert status == 200
    assert headers["strict-transport-security"] == "max-age=31536000"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert headers["server"] == "nginx"  # server_tokens off: no version
    # The role's default (both hosts): the page's own origin only.
    assert headers["content-security-policy"].startswith("default-src 'self'; script-src 'self'")


def test_security_headers_also_on_errors(host: Host) -> None:
    status, headers, _ = _get(host, "/metrics")
    assert status == 404
    assert headers["strict-transport-security"] == "max-age=31536000"
    assert headers["x-frame-options"] == "DENY"


def test_https_speaks_http2(host: Host) -> None:
    out = host.check_output(f"{CURL} --http2 -o /dev/null -w '%{{http_version}}' '{BASE}/'")
    assert out == "2"


@pytest.mark.parametrize(
    ("path", "port"),
    [
        ("/api/x", BACKEND),
        ("/api/jobs/42?full=1", BACKEND),
        ("/health", BACKEND),
        ("/", FRONTEND),
        ("/jobs/42", FRONTEND),
        ("/healthz", FRONTEND),
        ("/apix", FRONTEND),
    ],
)
def test_routes_to_the_right_upstream_with_path_kept(host: Host, path: str, port: int) -> None:
    seen = _upstream(host, path)
    assert seen["port"] == port
    assert seen["path"] == path


def test_upstream_gets_forwarding_headers_and_keepalive(host: Host) -> None:
    seen = _upstream(
        host,
        "/api/x",
        extra="-H 'X-Forwarded-For: 203.0.113.9' -H 'X-Archibald-Preview: any-token' "
        "-H 'Cookie: session=abc; archibald_preview=any-token; theme=dark'",
    )
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["host"] == NAME
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the edge drops what the client claimed
    assert headers["x-real-ip"] == "127.0.0.1"
    assert "connection" not in headers  # HTTP/1.1 keepalive to the upstream
    assert "x-archibald-preview" not in headers  # the preview token stops at the edge
    assert headers["cookie"] == "session=abc; theme=dark"  # its cookie too, the rest passes


def test_metrics_are_never_public(host: Host) -> None:
    paths = [
        "/metrics",
        "/metrics/",
        "/METRICS",
        "/api/metrics",
        "/api/v1/metrics",
        "/api/x/../metrics",
        "/%6detrics",
        "/grafana/metrics",
        "/prometheus/metrics",
    ]
    script = "; ".join(
        f"echo \"{p} $({CURL} --path-as-is -o /dev/null -w '%{{http_code}}' '{BASE}{p}')\""
        for p in paths
    )
    codes = dict(line.split(" ", 1) for line in host.check_output(script).splitlines())
    assert codes == dict.fromkeys(paths, "404")


@pytest.mark.parametrize(
    ("flag", "accepted"),
    [("-tls1", False), ("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)],
)
def test_tls_protocols(host: Host, flag: str, accepted: bool) -> None:
    if not host.exists("openssl"):
        host.check_output("apt-get install -y -q openssl")
    # SECLEVEL=0 lets the client offer the old protocols, so a refusal is the server's.
    result = host.run(
        f"openssl s_client -connect 127.0.0.1:443 -servername {NAME} {flag} "
        "-cipher 'DEFAULT:@SECLEVEL=0' </dev/null"
    )
    output = result.stdout + result.stderr
    if accepted:
        assert result.rc == 0, output
        assert f"TLSv1.{flag[-1]}" in output
    else:
        assert result.rc != 0, output
        assert "no protocols available" not in output  # the client did offer it
        assert "Cipher is (NONE)" in output or "alert protocol version" in output, output


def test_access_log_names_upstream_colour_and_version(host: Host) -> None:
    marker = f"/api/logprobe-{uuid.uuid4().hex}"
    _upstream(host, marker)

    def logged() -> str | None:
        out = host.run(f"grep -F '{marker}' /var/log/nginx/access.log").stdout
        return out.strip() or None

    line = _poll("the access log line", logged)
    assert f"upstream=127.0.0.1:{BACKEND}" in line
    assert "upstream_status=200" in line
    assert "color=blue" in line
    assert "version=standin" in line
    assert "request_time=" in line


def test_grafana_location(host: Host) -> None:
    websocket = "--http1.1 -H 'Connection: Upgrade' -H 'Upgrade: websocket'"
    seen = _upstream(host, "/grafana/api/live/ws", extra=websocket)
    if not _full_site(host):
        assert seen["port"] == FRONTEND  # off by default: just another frontend path
        return
    assert seen["port"] == GRAFANA
    assert seen["path"] == "/grafana/api/live/ws"  # no rewrite: Grafana serves the sub-path
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "upgrade"
    status, headers_out, _ = _get(host, "/grafana/")
    assert status == 200
    assert headers_out["x-frame-options"] == "DENY"
    # Only the listed networks (loopback here) reach it: from the host's address on
    # the test network, nginx answers 403 itself.
    ip = host.check_output("hostname -I").split()[0]
    refused = host.check_output(
        f"curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' --resolve {NAME}:443:{ip} "
        f"--cacert {CA} '{BASE}/grafana/'"
    )
    assert refused == "403", refused


def test_prometheus_location_needs_basic_auth(host: Host) -> None:
    if not _full_site(host):
        assert _upstream(host, "/prometheus/graph")["port"] == FRONTEND
        assert not host.file("/etc/nginx/archibald/prometheus.htpasswd").exists
        return
    htpasswd = host.file("/etc/nginx/archibald/prometheus.htpasswd")
    assert htpasswd.mode == 0o640
    assert htpasswd.group == "www-data"
    assert "molecule-only-secret" not in htpasswd.content_string
    assert _get(host, "/prometheus/graph")[0] == 401
    assert _get(host, "/prometheus/graph", extra="-u ops:wrong")[0] == 401
    seen = _upstream(host, "/prometheus/graph", extra="-u ops:molecule-only-secret")
    assert seen["port"] == PROMETHEUS
    # Prometheus serves at / on loopback and knows its public /prometheus/
    # prefix from --web.external-url: nginx strips the prefix.
    assert seen["path"] == "/graph"


def test_reload_keeps_in_flight_request(host: Host) -> None:
    """A reload (not a restart) lets the old worker finish a slow request."""
    master = _master_pid(host)
    host.run("rm -f /run/archibald-standin/slow-8101 /run/nginx-slow.headers")
    host.check_output(
        "systemd-run --unit molecule-nginx-slow --collect --quiet "
        f"curl -sS --max-time 30 --resolve {NAME}:443:127.0.0.1 --cacert {CA} "
        f"-D /run/nginx-slow.headers -o /dev/null {BASE}/api/slow"
    )
    _poll(
        "the slow request at the upstream",
        lambda: host.file("/run/archibald-standin/slow-8101").exists,
    )
    host.check_output("systemctl reload nginx")
    # The old worker keeps the request while new workers take new ones.
    _poll(
        "an old worker finishing its request",
        lambda: host.run("pgrep -f 'nginx: worker process is shutting down'").rc == 0,
        timeout=5,
    )
    assert _serving(host)
    status_line = _poll(
        "the slow request's answer",
        lambda: host.run("head -n1 /run/nginx-slow.headers").stdout.strip(),
    )
    assert status_line.split()[1] == "200", status_line
    assert _master_pid(host) == master
    assert host.check_output("systemctl show -p MainPID --value nginx") == master


def test_broken_fragment_is_refused_and_nginx_keeps_serving(host: Host) -> None:
    broken = "/etc/nginx/conf.d/zz-molecule-broken.conf"
    master = _master_pid(host)
    host.check_output(f"echo 'this_is_not_a_directive on;' > {broken}")
    try:
        test = host.run("nginx -t")
        assert test.rc != 0
        assert "unknown directive" in test.stderr
        # Even a reload that skips the test leaves the running config in place.
        host.run("systemctl reload nginx")
        assert host.service("nginx").is_running
        assert _serving(host)
        assert _master_pid(host) == master
    finally:
        host.run(f"rm -f {broken}")
    host.check_output("nginx -t -q")
    assert _serving(host)


# --- edge metrics: nginx's edge log, read by mtail --------------------------
# The converge gives nginx the port table blue 8101/8102 (the stand-in) and
# green 8201/8202 (nothing listens there: a colour that is down).


def _edge_series(host: Host) -> dict[tuple[str, ...], float]:
    """mtail's edge series now: (name, color, service[, status]) -> value."""
    text = host.check_output(f"curl -fsS --max-time 5 http://{MTAIL}/metrics")
    series: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "edge_http_requests_total":
                assert set(sample.labels) == {"color", "service", "status"}, sample
            elif sample.name == "edge_http_request_duration_seconds_count":
                assert set(sample.labels) == {"color", "service"}, sample
            else:
                continue
            series[(sample.name, *sample.labels.values())] = sample.value
    return series


def _edge_baseline(host: Host) -> dict[tuple[str, ...], float]:
    """The series once mtail has read what earlier tests logged (two equal reads 1 s apart)."""
    reads: list[dict[tuple[str, ...], float]] = []

    def settled() -> bool:
        reads.append(_edge_series(host))
        if len(reads) > 1 and reads[-1] == reads[-2]:
            return True
        time.sleep(1)  # mtail polls the log every 250 ms
        return False

    _poll("mtail's series to settle", settled)
    return reads[-1]


def _requests(color: str, service: str, status: int) -> tuple[str, ...]:
    return ("edge_http_requests_total", color, service, str(status))


def _await_series(host: Host, want: dict[tuple[str, ...], float], timeout: float = 15) -> None:
    """Poll mtail until every series in `want` has its value."""
    deadline = time.monotonic() + timeout
    while True:
        seen = _edge_series(host)
        got = {key: seen.get(key, 0.0) for key in want}
        if got == want:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"mtail's series not reached within {timeout}s: want {want}, got {got}")
        time.sleep(0.3)


def test_mtail_serves_on_loopback_only(host: Host) -> None:
    mtail = host.service("mtail")
    assert mtail.is_enabled
    assert mtail.is_running
    assert host.socket(f"tcp://{MTAIL}").is_listening
    assert not host.socket("tcp://0.0.0.0:3903").is_listening
    assert not host.socket("tcp://:::3903").is_listening
    listeners = host.check_output("ss -Hltnp | grep '\"mtail\"' | awk '{print $4}'").split()
    assert listeners == [MTAIL]


def test_edge_log_names_colour_service_and_times(host: Host) -> None:
    _upstream(host, "/api/edge-log-probe")

    def last_line() -> str | None:
        line = host.check_output(f"tail -n 1 {EDGE_LOG}")
        return line if 'upstream="127.0.0.1:8101"' in line else None

    line = _poll("the edge log line", last_line)
    assert re.fullmatch(
        r"time=\S+ color=blue service=backend status=200 request_time=\d+\.\d{3} "
        r'upstream_time="\d+\.\d{3}" upstream="127\.0\.0\.1:8101"',
        line,
    ), line


def test_edge_counts_answers_of_a_colour_that_is_up(host: Host) -> None:
    count = ("edge_http_request_duration_seconds_count", "blue", "backend")
    before = _edge_baseline(host)
    for i in range(5):
        _upstream(host, f"/api/edge-up-{i}")
    _await_series(
        host,
        {
            _requests("blue", "backend", 200): before.get(_requests("blue", "backend", 200), 0) + 5,
            count: before.get(count, 0) + 5,
        },
    )


def test_edge_counts_502_of_a_colour_that_is_down_for_that_colour(host: Host) -> None:
    """The backend switched to green, which is down: nginx's 502s count for green."""
    down = _requests("green", "backend", 502)
    before = _edge_baseline(host)
    statuses: list[int] = []
    host.check_output(f"cp {UPSTREAMS} /run/upstreams.conf.orig")
    try:
        host.check_output(f"sed -i 's/127.0.0.1:{BACKEND}/127.0.0.1:8201/' {UPSTREAMS}")
        host.check_output("nginx -t -q && systemctl reload nginx")
        # Until the new workers take over, a request may still reach blue.
        _poll(
            "a 502 from green's backend",
            lambda: statuses.append(_get(host, "/api/edge-down")[0]) or statuses[-1] == 502,
        )
        statuses.extend(_get(host, "/api/edge-down")[0] for _ in range(3))
    finally:
        host.check_output(f"cp /run/upstreams.conf.orig {UPSTREAMS}")
        host.check_output("nginx -t -q && systemctl reload nginx")
    assert set(statuses) <= {200, 502}, statuses
    _await_series(host, {down: before.get(down, 0) + statuses.count(502)})
    assert statuses.count(502) >= 4


def test_edge_counts_what_nginx_answers_itself_as_none(host: Host) -> None:
    not_found, redirect = _requests("none", "none", 404), _requests("none", "none", 301)
    before = _edge_baseline(host)
    assert _get(host, "/metrics")[0] == 404
    assert _get(host, "/api/metrics")[0] == 404
    http = host.check_output(
        f"curl -sS -o /dev/null -w '%{{http_code}}' -H 'Host: {NAME}' http://127.0.0.1/"
    )
    assert http == "301"
    _await_series(
        host,
        {not_found: before.get(not_found, 0) + 2, redirect: before.get(redirect, 0) + 1},
    )


def test_edge_metrics_survive_log_rotation(host: Host) -> None:
    """Debian's logrotate for nginx: the new edge.log is www-data:adm 0640; mtail reads on."""
    assert host.package("logrotate").is_installed  # the role installs it with mtail
    host.check_output("logrotate -f /etc/logrotate.d/nginx")
    log = host.file(EDGE_LOG)
    assert (log.user, log.group, log.mode) == ("www-data", "adm", 0o640)
    key = _requests("blue", "frontend", 200)
    before = _edge_baseline(host)
    for i in range(3):
        _upstream(host, f"/edge-rotated-{i}")
    _await_series(host, {key: before.get(key, 0) + 3})


def test_mtail_restart_counts_only_new_lines(host: Host) -> None:
    """mtail starts at the end of the log: a restart never counts old requests again."""
    key = _requests("blue", "backend", 200)
    host.check_output("systemctl restart mtail")
    _poll("mtail serving again", lambda: host.run(f"curl -fsS http://{MTAIL}/metrics").rc == 0)
    assert key not in _edge_series(host)
    _upstream(host, "/api/edge-after-restart")
    _await_series(host, {key: 1})
