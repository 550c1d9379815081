"""Verify the edge's hardening with real tools and traffic counted (issue #18).

- testssl.sh (Debian's package, on this machine) scans the host's TLS and
  finds nothing but what a self-signed test certificate must have (TEST_CERT).
- One client floods /api/ at 10x its limit (hey, from this machine: the
  network's gateway address) while a second client (inside the host, from
  127.0.0.1) sends normal traffic: the flood gets 429s, the normal client
  sees 0 failures and a p99 within 20 ms of its baseline (100 ms beside other
  scenarios: P99_SLACK_S).
- Slow clients (slowloris: headers a line at a time; slow bodies), bounded in
  count and time, are cut off by nginx's timeouts and do not starve the
  normal client.
- An oversized body gets 413 (JSON) from nginx and never reaches the upstream.

Every client here talks to this scenario's own containers only, and every
load is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from testinfra.host import Host

NAME = "localhost"
CA = f"/etc/ssl/archibald/{NAME}.crt"
CURL = f"curl -sS --max-time 10 --resolve {NAME}:443:127.0.0.1 --cacert {CA}"
# The role's defaults, which this scenario converges with.
API_RATE, API_BURST, HEALTH_RATE, HEALTH_BURST = 10, 20, 10, 20
PAGE_RATE, PAGE_BURST = 20, 100
MAX_BODY = 65536
HEADER_TIMEOUT_S = 10
# The normal client's p99 may rise this much during a flood. Beside other
# scenarios on this 2-core machine (harness/scenarios.py's role stage sets
# ARCHIBALD_SHARED_MACHINE), the CPU they take shows up as latency: +43 to
# +84 ms was seen there in every pair. The 20 ms bound is then checked where
# the scenario runs alone (GitHub's job, `make molecule SCENARIOS=nginx`).
P99_SLACK_S = 0.100 if os.environ.get("ARCHIBALD_SHARED_MACHINE") else 0.020
# How long after the timeout a slow client may see its connection closed, as this
# machine's threads measure it (each from before its TLS handshake). Beside
# other scenarios at a load average of 12 the last header was seen cut at 16.6 s
# for the 10 s timeout (stop 37's second clean-clone CI); alone 5 s is the bound.
CUTOFF_SLACK_S = 10 if os.environ.get("ARCHIBALD_SHARED_MACHINE") else 5
FLOOD_ATTEMPTS = 3

# What testssl.sh must find on a host with a self-signed test certificate, and
# why each is no fault of the configuration (id -> reason). Every other finding
# of severity LOW or worse fails the test.
TEST_CERT = {
    "cert_chain_of_trust": "self-signed: no CA vouches for it (production uses Let's Encrypt)",
    "cert_trust": "the name scanned is the container's address, not the certificate's name",
    "cert_crlDistributionPoints": "a self-signed certificate names no CRL",
    "cert_ocspURL": "a self-signed certificate names no OCSP responder",
    "cert_revocation": "a self-signed certificate can be neither revoked nor checked",
    "OCSP_stapling": "no OCSP responder to staple (stapling is on when the certificate names one)",
    "DNS_CAArecord": "the host has no public DNS name, so no CAA record",
    "cert_validityPeriod": "the test certificate is valid for 10 years, longer than CAs may issue",
    "cert_expirationStatus": "follows from cert_validityPeriod",
    "cert_notAfter": "follows from cert_validityPeriod",
}
FINDING = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
TESTSSL_TIMEOUT_S = 420

# A client that speaks HTTPS over one keepalive connection from inside the host
# (source 127.0.0.1), at a fixed rate for a fixed time; prints one JSON line:
# every request's status (0: no answer) and seconds.
NORMAL_CLIENT = r"""
import http.client, json, os, ssl, time
ctx = ssl.create_default_context(cafile=os.environ["CA"])
ctx.check_hostname = False  # the chain is verified; the certificate names localhost, not the IP
rate, seconds = float(os.environ["RATE"]), float(os.environ["SECONDS"])
path = os.environ["URL_PATH"]
conn = None
samples = []
deadline = time.monotonic() + seconds
next_at = time.monotonic()
while time.monotonic() < deadline:
    time.sleep(max(0.0, next_at - time.monotonic()))
    next_at += 1 / rate
    started = time.monotonic()
    try:
        if conn is None:
            conn = http.client.HTTPSConnection("127.0.0.1", 443, context=ctx, timeout=10)
        conn.request("GET", path, headers={"Host": "localhost"})
        answer = conn.getresponse()
        answer.read()
        status = answer.status
    except Exception:
        status, conn = 0, None
    samples.append([status, time.monotonic() - started])
print(json.dumps(samples))
"""


def _ip(host: Host) -> str:
    """The host container's address on the test network, as this machine reaches it."""
    name = host.backend.get_hostname()
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            '{{(index .NetworkSettings.Networks "archibald-test").IPAddress}}',
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _normal_client(host: Host, rate: float, seconds: float, path: str) -> subprocess.Popen[str]:
    """Start the normal client inside the host (docker exec); read it with _samples."""
    return subprocess.Popen(
        [
            *("docker", "exec", "-e", f"CA={CA}", "-e", f"RATE={rate}"),
            *("-e", f"SECONDS={seconds}", "-e", f"URL_PATH={path}"),
            *(host.backend.get_hostname(), "python3", "-c", NORMAL_CLIENT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _samples(client: subprocess.Popen[str]) -> list[tuple[int, float]]:
    out, err = client.communicate(timeout=120)
    assert client.returncode == 0, f"the normal client failed: {err[-2000:]}"
    return [(int(s), float(t)) for s, t in json.loads(out)]


def _p99(samples: list[tuple[int, float]]) -> float:
    times = sorted(t for _, t in samples)
    return times[min(len(times) - 1, int(len(times) * 0.99))]


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the scenario's self-signed certificate
    return context


def _connect(ip: str, timeout: float = 10) -> ssl.SSLSocket:
    """A TLS connection to the host's nginx from this machine."""
    raw = socket.create_connection((ip, 443), timeout=timeout)
    return _tls_context().wrap_socket(raw, server_hostname=NAME)


def _traffic_host(host: Host) -> None:
    """The traffic tests run on Debian 12 only (the directives and their meaning
    are the same on 13), which keeps the scenario within its time budget."""
    if "deb12" not in host.backend.get_hostname():
        pytest.skip(
            "traffic tests run on nginx-deb12 only: the limits and timeouts are the same "
            "directives on Debian 13, and running them twice would exceed the scenario's budget"
        )


def _wait_for_bucket(seconds: float = 3.0) -> None:
    """Let the per-client buckets of earlier tests drain: (burst / rate) s at most."""
    time.sleep(seconds)


# --- TLS: testssl.sh -----------------------------------------------------------


def test_testssl_finds_nothing_but_the_test_certificate(host: Host, tmp_path: Path) -> None:
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    if testssl is None:
        pytest.fail(
            "testssl.sh is not installed on this machine: `apt-get install -y "
            "--no-install-recommends testssl.sh` (.ci/run installs it), then run the scenario again"
        )
    report = tmp_path / "testssl.json"
    started = time.monotonic()
    result = subprocess.run(
        [
            testssl,
            *("--quiet", "--color", "0", "--warnings", "batch", "--sneaky"),
            # Every check but the client simulation (-c), which rates no
            # configuration and takes as long as all the others together.
            *("--protocols", "--std", "--fs", "--server-preference", "--server-defaults"),
            *("--headers", "--vulnerable"),
            *("--jsonfile", str(report), f"https://{_ip(host)}/"),
        ],
        capture_output=True,
        text=True,
        timeout=TESTSSL_TIMEOUT_S,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert report.exists(), (
        f"testssl wrote no report (rc {result.returncode}):\n{result.stdout[-3000:]}"
    )
    entries = json.loads(report.read_text())
    findings = {e["id"]: e for e in entries if e.get("severity") in FINDING}
    unexpected = {
        k: f"{v['severity']}: {v['finding']}" for k, v in findings.items() if k not in TEST_CERT
    }
    expected = sorted(k for k in findings if k in TEST_CERT)
    print(
        f"\n[testssl {host.backend.get_hostname()}] {len(findings)} findings in {elapsed:.0f} s: "
        f"{len(expected)} of the test certificate ({', '.join(expected)}), "
        f"{len(unexpected)} others {unexpected}"
    )
    for key in expected:
        found = findings[key]
        print(f"  {key}: {found['severity']} {found['finding']!r} - {TEST_CERT[key]}")
    assert not unexpected, f"testssl found: {json.dumps(unexpected, indent=1)}"
    offered = {e["id"]: e["finding"] for e in entries}
    assert "not vulnerable" in offered.get("LUCKY13", ""), offered.get("LUCKY13")
    assert "not vulnerable" in offered.get("BREACH", "") or "no gzip" in offered.get(
        "BREACH", ""
    ), offered.get("BREACH")


# --- rate and connection limits ---------------------------------------------------


def test_limited_requests_get_429_with_retry_after_and_json(host: Host) -> None:
    """From this machine, /api/ pipelined as fast as nginx answers: 1 + burst pass
    at once, then 429s (the bucket refills 1 per 100 ms)."""
    _wait_for_bucket()
    answers, elapsed = _ask_until_limited(_ip(host), lambda i: f"/api/limit-{i}", API_RATE)
    statuses = [status for status, _, _ in answers]
    print(f"\n[limits] {statuses.count(200)} passed in {elapsed:.2f} s, then 429: {statuses}")
    _assert_bucket(statuses, API_RATE, API_BURST, elapsed)
    headers, body = next((h, b) for status, h, b in answers if status == 429)
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert headers["strict-transport-security"] == "max-age=31536000"
    assert json.loads(body)["retry_after_s"] == 1


def _ask_until_limited(
    ip: str, path_of: Callable[[int], str], rate: float, batch: int = 20, within_s: float = 20
) -> tuple[list[tuple[int, dict[str, str], bytes]], float]:
    """Ask for path_of(0), path_of(1), ... on one connection, pipelined in batches
    (HTTP/1.1), until an answer is 429: bounded by within_s seconds and by the
    requests a bucket of that rate can pass in that time.

    Pipelined, the requests reach nginx as fast as it and the stand-in answer,
    not at the pace of this machine's round trips: sent one by one beside other
    scenarios, 120 page requests took 1.5 s, and a 20/s bucket refilled faster
    than they spent it (stop 37's CI)."""
    answers: list[tuple[int, dict[str, str], bytes]] = []
    started = time.monotonic()
    bound = int(rate * within_s) + 200
    with _connect(ip) as tls:
        stream = tls.makefile("rb")
        while len(answers) < bound and time.monotonic() - started < within_s:
            first = len(answers)
            tls.sendall(
                b"".join(
                    f"GET {path_of(i)} HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()
                    for i in range(first, first + batch)
                )
            )
            answers += [_read_answer(stream) for _ in range(batch)]
            if any(status == 429 for status, _, _ in answers[first:]):
                break
    return answers, time.monotonic() - started


def _assert_bucket(statuses: list[int], rate: float, burst: int, elapsed: float) -> None:
    """nginx's limit_req with nodelay: 1 + burst pass at once, the first burst of
    them 200, then a 429 comes before the refill (rate per second) could pass them all."""
    assert 429 in statuses, (
        f"no request was limited in {elapsed:.1f} s ({len(statuses)} asked, "
        f"{len(statuses) / elapsed:.0f}/s for a {rate}/s bucket): {statuses}"
    )
    passed = statuses.index(429)
    assert statuses[:burst] == [200] * burst, (
        f"an answer within the burst of {burst} was not 200: {statuses}"
    )
    assert passed <= 1 + burst + rate * elapsed + 1, (
        f"{passed} passed before the first 429 in {elapsed:.2f} s: more than 1 + {burst} "
        f"+ {rate}/s: {statuses}"
    )


def _read_answer(stream: Any) -> tuple[int, dict[str, str], bytes]:
    status = int(stream.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline().decode().strip()) != "":
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return status, headers, body


def test_health_has_a_bucket_of_its_own(host: Host) -> None:
    _wait_for_bucket()
    ip = _ip(host)
    answers, elapsed = _ask_until_limited(ip, lambda _: "/health", HEALTH_RATE)
    health = [status for status, _, _ in answers]
    # /health is spent; /api/ from the same address still passes.
    with _connect(ip) as tls:
        tls.sendall(f"GET /api/after-health HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
        api = _read_answer(tls.makefile("rb"))[0]
    print(f"\n[health limit] {health.count(429)} of {len(health)} limited in {elapsed:.2f} s")
    _assert_bucket(health, HEALTH_RATE, HEALTH_BURST, elapsed)
    assert api == 200


def test_the_page_and_its_files_share_a_bucket_of_their_own(host: Host) -> None:
    """Every public location has a rate: the page and its static files count together
    (one page load), apart from /api/; their 429 is the same JSON answer."""
    _wait_for_bucket()
    ip = _ip(host)
    try:
        answers, elapsed = _ask_until_limited(
            ip, lambda i: "/" if i % 2 else f"/static/app-{i}.js", PAGE_RATE
        )
        with _connect(ip) as tls:
            tls.sendall(f"GET /api/after-pages HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
            api = _read_answer(tls.makefile("rb"))[0]
    finally:
        # The tests after this one ask for the page: leave them a full bucket.
        _wait_for_bucket(PAGE_BURST / PAGE_RATE + 1)
    statuses = [status for status, _, _ in answers]
    print(f"\n[page limit] {statuses.count(429)} of {len(statuses)} limited in {elapsed:.2f} s")
    _assert_bucket(statuses, PAGE_RATE, PAGE_BURST, elapsed)
    headers, body = next((h, b) for status, h, b in answers if status == 429)
    assert headers["retry-after"] == "1" and json.loads(body)["retry_after_s"] == 1
    assert api == 200


def test_flood_gets_429_and_the_normal_client_does_not_notice(host: Host) -> None:
    """hey floods /api/ at 10x the rate from this machine; the normal client is 127.0.0.1.

    The p99 of 48 requests is their slowest but one, and a machine shared with
    other test runs can stall any single request by 100 ms or more. So a
    baseline and a flood are measured in pairs, up to FLOOD_ATTEMPTS times: the
    flood must never cost the normal client a request, and in at least one pair
    its p99 must stay within P99_SLACK_S of the baseline just before. A flood that
    really slowed the normal client would do so in every pair.
    """
    _traffic_host(host)
    if shutil.which("hey") is None:
        pytest.fail("hey is not installed on this machine: `apt-get install hey` (.ci/run does)")
    rate, seconds, flood_s = 8, 6, 9
    attempts = []
    for attempt in range(1, FLOOD_ATTEMPTS + 1):
        _wait_for_bucket()
        baseline = _samples(_normal_client(host, rate, seconds, "/api/normal"))
        flood = subprocess.Popen(
            [
                *("hey", "-z", f"{flood_s}s", "-c", "4", "-q", str(API_RATE * 10 // 4)),
                *("-host", NAME, f"https://{_ip(host)}/api/flood"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(2)  # the flood has spent its burst
        during = _samples(_normal_client(host, rate, seconds, "/api/normal"))
        out, _ = flood.communicate(timeout=flood_s + 60)
        codes = {int(c): int(n) for c, n in _hey_codes(out)}
        flood_total = sum(codes.values())
        base_p99, p99 = _p99(baseline), _p99(during)
        failed = [s for s in during + baseline if s[0] != 200]
        print(
            f"\n[flood {host.backend.get_hostname()} #{attempt}] flood: {flood_total} requests "
            f"in {flood_s} s ({flood_total / flood_s:.0f}/s, limit {API_RATE}/s burst "
            f"{API_BURST}): {codes}; normal client: {len(during)} requests, {len(failed)} "
            f"failed, p99 {p99 * 1000:.1f} ms (baseline {base_p99 * 1000:.1f} ms; bound +"
            f"{P99_SLACK_S * 1000:.0f} ms)"
        )
        assert flood_total >= API_RATE * 10 * flood_s * 0.6, (
            f"the flood was too slow: {out[-1500:]}"
        )
        assert codes.get(429, 0) >= flood_total * 0.8, codes
        assert codes.get(200, 0) <= API_RATE * flood_s + API_BURST + API_RATE, codes
        assert set(codes) <= {200, 429}, codes
        assert not failed, failed
        attempts.append((base_p99, p99))
        if p99 <= base_p99 + P99_SLACK_S:
            return
    pairs = [(round(b * 1000, 1), round(f * 1000, 1)) for b, f in attempts]
    pytest.fail(
        f"the normal client's p99 rose by more than {P99_SLACK_S * 1000:.0f} ms during the "
        f"flood in every pair (baseline, flood) in ms: {pairs}"
    )


def _hey_codes(output: str) -> list[tuple[str, str]]:
    import re

    summary = output.partition("Error distribution:")[0]
    return re.findall(r"\[(\d{3})\]\s+(\d+) responses", summary)


# --- slow clients ------------------------------------------------------------------

SLOW_HEADERS = 200
# Under the per-client cap of requests in progress (20): these do count once
# their header is read, unlike the slow headers.
SLOW_BODIES = 10
# A normal client slower than this (p99) while slow clients are held counts as starved.
STARVED_S = 0.25


def _slow_client(
    ip: str, kind: str, closed_after: list[float], stop: threading.Event, held: list[str]
) -> None:
    """One slow client until nginx closes it: "header" sends a header line every 2 s
    (the header timeout counts the whole header); "body" sends 1 byte of its body
    and then nothing (the body timeout counts each pause)."""
    started = time.monotonic()
    try:
        with _connect(ip, timeout=30) as tls:
            if kind == "header":
                tls.sendall(f"GET /api/slow-header HTTP/1.1\r\nHost: {NAME}\r\n".encode())
            else:
                tls.sendall(
                    f"POST /api/slow-body HTTP/1.1\r\nHost: {NAME}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
                )
                started = time.monotonic()  # the body timeout counts from the last read
            held.append(kind)
            tls.settimeout(2)
            while not stop.is_set():
                try:
                    if tls.recv(4096) == b"":
                        break  # nginx closed it
                except TimeoutError:
                    pass
                except OSError:
                    break
                if kind == "header":
                    tls.sendall(b"X-Slow: 1\r\n")
            else:
                return
    except OSError:
        pass
    closed_after.append(time.monotonic() - started)


def test_slow_clients_are_cut_off_and_do_not_starve_normal_clients(host: Host) -> None:
    """200 slowloris connections and 10 stalled bodies for at most 25 s, from this machine."""
    _traffic_host(host)
    ip = _ip(host)
    rate, seconds = 8, 12
    baseline = _samples(_normal_client(host, rate, 8, "/api/normal"))
    stop = threading.Event()
    closed: dict[str, list[float]] = {"header": [], "body": []}
    held: list[str] = []
    threads = [
        threading.Thread(
            target=_slow_client, args=(ip, kind, closed[kind], stop, held), daemon=True
        )
        for kind, count in (("header", SLOW_HEADERS), ("body", SLOW_BODIES))
        for _ in range(count)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    # Measure while nginx holds them all, not while this machine opens them.
    while len(held) < len(threads) and time.monotonic() < started + 8:
        time.sleep(0.1)
    opened = len(held)
    during = _samples(_normal_client(host, rate, seconds, "/api/normal"))
    deadline = started + 25
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    stop.set()
    failed = [s for s in during if s[0] != 200]
    cut = {k: len(v) for k, v in closed.items()}
    latest = {k: max(v, default=0.0) for k, v in closed.items()}
    print(
        f"\n[slow clients {host.backend.get_hostname()}] {SLOW_HEADERS} slow headers, "
        f"{SLOW_BODIES} stalled bodies ({opened} held open before measuring): "
        f"cut off {cut} (the last after {latest['header']:.1f} s "
        f"and {latest['body']:.1f} s); normal client: {len(during)} requests, {len(failed)} "
        f"failed, p99 {_p99(during) * 1000:.1f} ms (baseline {_p99(baseline) * 1000:.1f} ms)"
    )
    assert not failed, failed
    assert cut == {"header": SLOW_HEADERS, "body": SLOW_BODIES}, (
        f"nginx did not cut off every slow client within 25 s: {cut}"
    )
    # The header timeout counts the whole header; the body timeout each pause.
    assert latest["header"] <= HEADER_TIMEOUT_S + CUTOFF_SLACK_S, latest
    assert latest["body"] <= HEADER_TIMEOUT_S + CUTOFF_SLACK_S, latest
    # Not starved: every request answered, none anywhere near a timeout.
    assert _p99(during) <= STARVED_S, f"p99 {_p99(during) * 1000:.0f} ms"


# --- body size ---------------------------------------------------------------------


def _posts(host: Host) -> list[int]:
    log = host.file("/run/archibald-standin/posts-8101")
    return [int(n) for n in log.content_string.split()] if log.exists else []


def test_oversized_body_gets_413_json_at_the_edge_and_never_reaches_the_app(host: Host) -> None:
    _wait_for_bucket()
    before = _posts(host)
    host.check_output(f"head -c {MAX_BODY + 1} /dev/zero | tr '\\0' x > /run/edge-big.json")
    host.check_output(f"head -c {MAX_BODY} /dev/zero | tr '\\0' x > /run/edge-fits.json")
    post = f"{CURL} -X POST -H 'Content-Type: application/json' -w '\\n%{{http_code}}'"
    big = host.check_output(f"{post} --data-binary @/run/edge-big.json https://{NAME}/api/jobs")
    body, _, status = big.rpartition("\n")
    assert status == "413", big[-500:]
    assert json.loads(body) == {
        "error": f"the request body is larger than {MAX_BODY} bytes",
        "field": "body",
    }
    assert _posts(host) == before, "the oversized body reached the upstream"
    fits = host.check_output(f"{post} --data-binary @/run/edge-fits.json https://{NAME}/api/jobs")
    assert fits.rpartition("\n")[2] == "200", fits[-500:]
    assert _posts(host) == [*before, MAX_BODY]


# --- headers and compression ---------------------------------------------------------


def _headers(host: Host, path: str, extra: str = "") -> dict[str, str]:
    out = host.check_output(f"{CURL} -o /dev/null -D - {extra} 'https://{NAME}{path}'")
    headers = {}
    for line in out.replace("\r\n", "\n").splitlines()[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return headers


def test_frontend_has_csp_and_permissions_policy_the_api_does_not_need(host: Host) -> None:
    _wait_for_bucket()
    page = _headers(host, "/")
    assert "script-src 'self'" in page["content-security-policy"]
    assert "frame-ancestors 'none'" in page["content-security-policy"]
    assert "camera=()" in page["permissions-policy"]
    assert page["strict-transport-security"] == "max-age=31536000"
    assert page["server"] == "nginx"
    static = _headers(host, "/static/app.js")
    assert static["content-security-policy"] == page["content-security-policy"]
    api = _headers(host, "/api/x")
    assert "content-security-policy" not in api
    assert api["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "gzip"),
    [("/", False), ("/api/x", False), ("/health", False), ("/static/app.js", True)],
)
def test_only_static_files_are_compressed(host: Host, path: str, gzip: bool) -> None:
    """BREACH: dynamic answers are never compressed; static files may be. The
    stand-in answers as=html with text/html, which gzip would always compress."""
    _wait_for_bucket(1)
    kind = "js" if path.endswith(".js") else "html"
    headers = _headers(host, f"{path}?as={kind}&padding={'a' * 200}", "-H 'Accept-Encoding: gzip'")
    assert (headers.get("content-encoding") == "gzip") is gzip, headers
