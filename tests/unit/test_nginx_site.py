"""The nginx site as archibald.conf.j2 renders it from the role's defaults (issue 18):
Mozilla's TLS profiles, OCSP stapling only with a responder, the limits and their
JSON answers, and a body limit equal to the app's own; asset bridging (issue 24):
only static files are asked of the other colour, whose retirement answers a 404, and
every upstream file defines the variables the site reads.

The nginx scenario checks the same on real nginx with real traffic; these run in
a second and catch a template or a default that drifts from what it promises.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from loopback_nginx import loopback_nginx

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "nginx"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PROFILES = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__nginx_tls_profiles"]
# Mozilla's server-side TLS guidelines, configuration generator 6.0, intermediate.
MOZILLA_INTERMEDIATE = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
]


def render(**overrides: Any) -> str:
    values = {**DEFAULTS, **overrides}
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True
    )
    env.filters["comment"] = lambda text: f"# {text}"
    env.filters["bool"] = bool
    template = env.from_string((ROLE / "templates" / "archibald.conf.j2").read_text())
    return template.render(
        values,
        ansible_managed="Ansible managed",
        _nginx_http2_on_listen=False,
        _nginx_certificate="/etc/ssl/archibald/localhost.crt",
        _nginx_certificate_key="/etc/ssl/archibald/localhost.key",
        _nginx_tls=PROFILES[values["nginx_tls_profile"]],
        _nginx_ocsp_stapling=overrides.get("_nginx_ocsp_stapling", False),
        _nginx_prometheus_enabled=True,
        _nginx_prometheus_htpasswd="/etc/nginx/archibald/prometheus.htpasswd",
    )


def directive(conf: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]*);", conf, re.M)


def location(conf: str, name: str) -> str:
    """A location block of the HTTPS server."""
    conf = conf[conf.index("listen 443") :]
    match = re.search(rf"^    location {re.escape(name)} \{{\n(.*?)^    \}}", conf, re.M | re.S)
    assert match, f"no location {name}"
    return match.group(1)


def test_intermediate_is_mozillas_list_and_nothing_weaker() -> None:
    conf = render()
    assert directive(conf, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    (ciphers,) = directive(conf, "ssl_ciphers")
    assert ciphers.split(":") == MOZILLA_INTERMEDIATE
    aead_with_fs = r"ECDHE-(ECDSA|RSA)-(AES(128-GCM-SHA256|256-GCM-SHA384)|CHACHA20-POLY1305)"
    assert all(re.fullmatch(aead_with_fs, suite) for suite in ciphers.split(":"))
    assert directive(conf, "ssl_session_tickets") == ["off"]


def test_modern_is_tls13_only() -> None:
    conf = render(nginx_tls_profile="modern")
    assert directive(conf, "ssl_protocols") == ["TLSv1.3"]
    assert directive(conf, "ssl_ciphers") == []
    assert directive(conf, "ssl_prefer_server_ciphers") == ["off"]


@pytest.mark.parametrize("responder", [False, True])
def test_ocsp_stapling_only_with_a_responder(responder: bool) -> None:
    conf = render(_nginx_ocsp_stapling=responder)
    assert (directive(conf, "ssl_stapling") == ["on"]) is responder
    assert (directive(conf, "ssl_stapling_verify") == ["on"]) is responder


def test_the_edges_body_limit_is_the_apps() -> None:
    sys.path.insert(0, str(ROOT / "app"))
    try:
        from archibald_app.config import Config
    finally:
        sys.path.remove(str(ROOT / "app"))
    assert DEFAULTS["nginx_client_max_body_bytes"] == Config().max_body_bytes
    assert directive(render(), "client_max_body_size") == [str(Config().max_body_bytes)]


def _json_body(block: str, status: int) -> dict[str, Any]:
    match = re.search(rf"return {status} '(.*)';", block)
    assert match, block
    return json.loads(match.group(1).replace("\\n", "\n"))


def test_limits_answer_429_and_413_as_json_with_the_security_headers() -> None:
    conf = render(nginx_grafana_enabled=True)
    assert directive(conf, "limit_req_status") == ["429"]
    assert directive(conf, "limit_conn_status") == ["429"]
    limited = location(conf, "@archibald_limited")
    assert 'add_header Retry-After "1" always' in limited
    assert "Strict-Transport-Security" in limited
    assert _json_body(limited, 429)["retry_after_s"] == 1
    too_large = location(conf, "@archibald_too_large")
    assert _json_body(too_large, 413) == {
        "error": "the request body is larger than 65536 bytes",
        "field": "body",
    }
    api = location(conf, "/api/")
    assert "limit_req zone=archibald_api burst=20 nodelay;" in api
    assert "error_page 413 @archibald_too_large;" in api
    assert "error_page 429 @archibald_limited;" in api
    assert "limit_req zone=archibald_health burst=20 nodelay;" in location(conf, "= /health")
    for monitoring in ("/grafana/", "/prometheus/"):
        assert "zone=archibald_monitoring" in location(conf, monitoring)
    # Every public location has a rate: the page and its files share a bucket,
    # and their 429 is the same JSON answer (their error_page list is their own).
    for page in ("/", *DEFAULTS["nginx_gzip_static_paths"]):
        block = location(conf, page)
        assert "limit_req zone=archibald_page burst=100 nodelay;" in block, page
        assert "error_page 429 @archibald_limited;" in block, page


@pytest.mark.parametrize(
    ("include", "header"),
    [(False, "max-age=31536000"), (True, "max-age=31536000; includeSubDomains")],
)
def test_hsts_names_the_subdomains_only_when_asked(include: bool, header: str) -> None:
    conf = render(nginx_hsts_include_subdomains=include)
    hsts = re.findall(r'add_header Strict-Transport-Security "([^"]*)" always;', conf)
    # Every location that sets headers of its own repeats it, each the same.
    assert len(hsts) > 1 and set(hsts) == {header}, hsts


def test_the_http_redirect_names_the_site_not_the_requests_host() -> None:
    conf = render(nginx_server_name="shop.example")
    assert directive(conf, "return 301") == ["https://shop.example$request_uri"]


def test_grafana_is_for_everyone_or_only_for_the_listed_networks() -> None:
    open_to_all = location(render(nginx_grafana_enabled=True), "/grafana/")
    assert "allow " not in open_to_all and "deny " not in open_to_all
    listed = location(
        render(
            nginx_grafana_enabled=True,
            nginx_grafana_allowed_networks=["203.0.113.0/24", "2001:db8::/48"],
        ),
        "/grafana/",
    )
    rules = re.findall(r"^\s*(allow|deny) ([^;]+);", listed, re.M)
    assert rules == [("allow", "203.0.113.0/24"), ("allow", "2001:db8::/48"), ("deny", "all")]


def test_exempt_networks_get_an_empty_key() -> None:
    conf = render(nginx_limit_exempt_networks=["172.18.0.1/32", "2001:db8::/32"])
    geo = re.search(r"geo \$archibald_limit_exempt \{(.*?)\}", conf, re.S)
    assert geo
    assert "172.18.0.1/32 1;" in geo.group(1) and "2001:db8::/32 1;" in geo.group(1)
    assert re.search(
        r"map \$archibald_limit_exempt \$archibald_limit_key \{"
        r'\s*0 \$archibald_limit_addr;\s*1 "";',
        conf,
    )


def test_only_static_files_are_compressed_and_only_the_page_has_a_csp() -> None:
    conf = render()
    assert "gzip on;" in location(conf, "/static/")
    assert "gzip on" not in location(conf, "/") and "gzip on" not in location(conf, "/api/")
    nginx_conf = (ROLE / "templates" / "nginx.conf.j2").read_text()
    assert "    gzip off;" in nginx_conf
    for page in ("/", "/static/"):
        assert "Content-Security-Policy" in location(conf, page)
        assert "Permissions-Policy" in location(conf, page)
    assert "Content-Security-Policy" not in location(conf, "/api/")


# --- Asset bridging: a page of the previous release gets its own files --------

BLUEGREEN = ROOT / "roles" / "bluegreen"
# What the app's frontend answers for a file it does not have (frontend.asset).
APP_NOT_FOUND = {"error": "no such file", "field": "path"}


def render_bluegreen_upstreams(stable: str, canary: dict[str, Any] | None = None) -> str:
    """The upstream file a switch (or a canary step) writes, from the role's defaults."""
    plain = {
        name: value
        for name, value in yaml.safe_load((BLUEGREEN / "vars" / "main.yml").read_text()).items()
        if not (isinstance(value, str) and "{{" in value)
    }
    values = {**yaml.safe_load((BLUEGREEN / "defaults" / "main.yml").read_text()), **plain}
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True
    )
    env.filters["comment"] = lambda text: f"# {text}"
    template = env.from_string((BLUEGREEN / "templates" / "upstreams.conf.j2").read_text())
    return template.render(
        values,
        ansible_managed="Ansible managed",
        _bluegreen_color=stable,
        _bluegreen_canary=canary,
        _bluegreen_preview_map="/etc/nginx/archibald/preview.map",
    )


def render_initial_upstreams() -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda text: f"# {text}"
    template = env.from_string((ROLE / "templates" / "upstreams.conf.j2").read_text())
    return template.render(DEFAULTS, ansible_managed="Ansible managed")


def defined_variables(conf: str) -> set[str]:
    """Variables a map, geo or split_clients block of `conf` defines, and the named
    captures of its regular expressions (nginx sets one variable per name)."""
    # The defined variable is the last one before the block's brace.
    blocks = re.findall(r"^\s*(?:map|geo|split_clients)\b[^{\n]*\$(\w+)\s*\{", conf, re.M)
    return set(blocks) | set(re.findall(r"\(\?P?<(\w+)>", conf))


def test_only_the_static_files_are_asked_of_the_other_colour() -> None:
    conf = render()
    static = location(conf, "/static/")
    assert "proxy_intercept_errors on;" in static
    assert "error_page 404 = @archibald_assets_other;" in static
    assert "recursive_error_pages on;" in static
    assert "proxy_pass http://archibald_frontend_$archibald_color;" in static
    # Never the API, the health check or the page: their 404 is the live colour's.
    for other in ("/", "/api/", "= /health"):
        block = location(conf, other)
        assert "proxy_intercept_errors" not in block and "error_page 404" not in block, other
        assert "recursive_error_pages" not in block, other
    assert conf.count("@archibald_assets_other;") == len(DEFAULTS["nginx_gzip_static_paths"])


def test_the_other_colour_answers_with_its_file_or_an_honest_404() -> None:
    conf = render()
    bridge = location(conf, "@archibald_assets_other")
    assert "proxy_pass http://archibald_frontend_$archibald_other_color;" in bridge
    # Its own answer (200, or its 404) goes to the client as it is.
    assert "proxy_intercept_errors" not in bridge
    # Retired (nothing listens: 502) or hanging (504): the file is gone.
    assert "error_page 502 504 =404 @archibald_asset_gone;" in bridge
    assert "gzip on;" in bridge and "Content-Security-Policy" in bridge
    gone = location(conf, "@archibald_asset_gone")
    assert _json_body(gone, 404) == APP_NOT_FOUND
    assert "Strict-Transport-Security" in gone


@pytest.mark.parametrize(
    ("stable", "canary"),
    [("blue", None), ("green", None), ("blue", {"color": "green", "version": "v2", "weight": 25})],
)
def test_each_colours_miss_goes_to_the_other(stable: str, canary: dict[str, Any] | None) -> None:
    upstreams = render_bluegreen_upstreams(stable, canary)
    block = re.search(
        r"map \$archibald_color \$archibald_other_color \{\n(.*?)\n\}", upstreams, re.S
    )
    assert block, upstreams
    pairs = dict(line.strip().rstrip(";").split() for line in block.group(1).splitlines())
    assert pairs == {"blue": "green", "green": "blue"}
    for color in pairs.values():
        assert f"upstream archibald_frontend_{color} {{" in upstreams


@pytest.mark.parametrize("upstreams", ["initial", "switch", "canary"])
def test_every_variable_the_site_reads_from_the_upstream_file_is_defined_there(
    upstreams: str,
) -> None:
    """nginx -t fails on an unknown variable: each upstream file (the nginx role's
    first one, a switch's, a canary step's) defines all that the site uses."""
    conf = render()
    wanted = set(re.findall(r"\$(archibald_\w+)", conf)) - defined_variables(conf)
    assert {"archibald_color", "archibald_other_color", "archibald_client_cookie"} <= wanted
    text = {
        "initial": render_initial_upstreams,
        "switch": lambda: render_bluegreen_upstreams("green"),
        "canary": lambda: render_bluegreen_upstreams(
            "blue", {"color": "green", "version": "v2", "weight": 10}
        ),
    }[upstreams]()
    assert wanted <= defined_variables(text), sorted(wanted - defined_variables(text))


# --- limits per IPv6 /64 ----------------------------------------------------------


def _limit_addr_map() -> str:
    """The site's map from the client's address to its limit key, reading the address
    from an X-Addr header instead, so that a loopback nginx judges any address."""
    found = re.search(
        r"^map \$remote_addr \$archibald_limit_addr \{\n.*?^\}\n", render(), re.M | re.S
    )
    assert found, "the site has no map from the client's address to its limit key"
    return found.group(0).replace("map $remote_addr ", "map $http_x_addr ", 1)


@pytest.fixture(scope="module")
def limit_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], bytes]]:
    with loopback_nginx(
        tmp_path_factory.mktemp("nginx"), _limit_addr_map(), 'return 200 "$archibald_limit_addr";'
    ) as url:

        def key(address: str) -> bytes:
            request = urllib.request.Request(url, headers={"X-Addr": address})
            with urllib.request.urlopen(request, timeout=5) as answer:
                return bytes(answer.read())

        yield key


# How nginx writes an IPv6 client (inet_ntop, RFC 5952) -> its bucket: the /64.
SIXTY_FOUR = {
    "2001:db8:1:2::10": "2001:db8:1:2::/64",
    "2001:db8:1:2:aaaa:bbbb:cccc:dddd": "2001:db8:1:2::/64",
    "2001:db8:1:2::": "2001:db8:1:2::/64",
    "2001:db8:1::5": "2001:db8:1:0::/64",
    "2001:db8:1:0:1::": "2001:db8:1:0::/64",
    "2001:db8::5": "2001:db8:0:0::/64",
    "2001:db8::1:2:3:4": "2001:db8:0:0::/64",
    "2001:db8:0:0:1::": "2001:db8:0:0::/64",
    "2001::5": "2001:0:0:0::/64",
    "2001::7:1:2:3:4": "2001:0:0:7::/64",
    "2001:0:0:7::1": "2001:0:0:7::/64",
    "::1": "0:0:0:0::/64",
    "::7:1:2:3:4": "0:0:0:7::/64",
    "::7:8:1:2:3:4": "0:0:7:8::/64",
    "0:0:7:8::1": "0:0:7:8::/64",
}


@pytest.mark.parametrize(("address", "bucket"), SIXTY_FOUR.items(), ids=list(SIXTY_FOUR))
def test_an_ipv6_client_is_limited_by_its_64(
    limit_key: Callable[[str], bytes], address: str, bucket: str
) -> None:
    # The table is right: the address is in that /64 (ipaddress reads every spelling).
    assert ipaddress.ip_address(address) in ipaddress.ip_network(bucket)
    assert limit_key(address).decode() == bucket


@pytest.mark.parametrize("address", ["198.51.100.7", "::ffff:198.51.100.7"])
def test_an_ipv4_client_is_limited_by_its_address(
    limit_key: Callable[[str], bytes], address: str
) -> None:
    # The connection's own address in binary: the loopback client here.
    assert limit_key(address) == bytes([127, 0, 0, 1])
