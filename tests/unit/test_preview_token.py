"""The preview token sends a request to the idle colour only when it is given
exactly (issue 24), and the app never sees it.

nginx's `map` matches a plain string ignoring case, so the upper-cased token
once reached the idle colour: the role writes the token as a case-sensitive,
anchored regular expression (`~^<token, escaped>$`). The map entries are
rendered from preview.yml as Ansible renders them and matched the way nginx
matches a `~` entry (PCRE, the same as Python's `re` for these patterns); the
site clears the header in every proxied location. molecule/nginx checks that
the stand-in upstream gets no preview header; the whole stack
(test_12_hooks.py) that the upper-cased token reaches the stable colour.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from loopback_nginx import loopback_nginx
from test_nginx_site import render as render_site
from trusted_vars import trusted

init_plugin_loader()

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "bluegreen"
HEADER = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_bluegreen_preview_header"]
TOKEN = "preview-token-of-the-test-host-not-a-secret"
# One entry: "<source>" <value>; (nginx's quoting: \" and \\ only are unescaped).
ENTRY = re.compile(r'^"(?P<source>(?:[^"\\]|\\.)*)"\s+(?P<value>\S+);$')


def _templar(token: str) -> Templar:
    variables: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        variables |= yaml.safe_load((ROLE / part / "main.yml").read_text()) or {}
    variables |= {"bluegreen_preview_token": token}
    return Templar(loader=DataLoader(), variables=trusted(variables))


def preview_map(token: str) -> list[str]:
    """The map entries preview.yml writes for `token`, comments and blank lines left out."""
    tasks = yaml.safe_load((ROLE / "tasks" / "preview.yml").read_text())
    content = next(t for t in tasks if "ansible.builtin.copy" in t)["ansible.builtin.copy"]
    text = str(_templar(token).template(trust_as_template(content["content"])))
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def nginx_maps(entries: list[str], value: str) -> bool:
    """Whether `value` maps to 1, as nginx matches these entries (strings ignore case)."""
    for line in entries:
        found = ENTRY.match(line)
        assert found, f"not a map entry nginx reads: {line!r}"
        source = re.sub(r'\\(["\\])', r"\1", found["source"])
        if source.startswith("~*"):
            hit = re.search(source[2:], value, re.I) is not None
        elif source.startswith("~"):
            hit = re.search(source[1:], value) is not None
        else:
            hit = source.removeprefix("\\").lower() == value.lower()
        if hit:
            return found["value"] == "1"
    return False


@pytest.mark.parametrize(
    ("given", "reaches"),
    [
        (TOKEN, True),
        (TOKEN.upper(), False),
        (TOKEN.capitalize(), False),
        (TOKEN + "x", False),
        ("x" + TOKEN, False),
        (TOKEN[:-1], False),
        ("", False),
    ],
    ids=["exact", "upper-case", "capitalised", "longer", "prefixed", "shorter", "none"],
)
def test_only_the_exact_token_reaches_the_idle_colour(given: str, reaches: bool) -> None:
    assert nginx_maps(preview_map(TOKEN), given) is reaches


def test_a_token_is_matched_as_text_not_as_a_pattern() -> None:
    token = "a.b-c_d" * 6
    entries = preview_map(token)
    assert nginx_maps(entries, token)
    assert not nginx_maps(entries, token.replace(".", "x", 1))


def test_every_entry_is_case_sensitive() -> None:
    entries = preview_map(TOKEN)
    assert len(entries) == 1
    assert all(e.startswith('"~') and not e.startswith('"~*') for e in entries), entries


def test_no_token_writes_no_entry() -> None:
    assert preview_map("") == []


@pytest.mark.parametrize(
    ("token", "accepted"),
    [("", True), (TOKEN, True), ("A" * 32, True), (TOKEN + "\n", False), ("a b" * 16, False)],
    ids=["none", "token", "32", "trailing-newline", "blank"],
)
def test_preflight_takes_a_whole_token(token: str, accepted: bool) -> None:
    tasks = yaml.safe_load((ROLE / "tasks" / "preflight.yml").read_text())
    task = next(t for t in tasks if "preview token" in t.get("name", ""))
    that = task["ansible.builtin.assert"]["that"]
    conditions = [that] if isinstance(that, str) else that
    templar = _templar(token)
    assert all(templar.evaluate_conditional(trust_as_template(c)) for c in conditions) is accepted


def test_the_site_clears_the_preview_header_and_cookie_before_every_proxy_pass() -> None:
    conf = render_site()
    blocks = re.findall(r"^    location ([^{]*)\{\n(.*?)^    \}", conf, re.M | re.S)
    proxied = {name.strip(): body for name, body in blocks if "proxy_pass" in body}
    assert {"/api/", "= /health", "/"} <= set(proxied), sorted(proxied)
    for name, body in proxied.items():
        assert f'proxy_set_header {HEADER} "";' in body, f"location {name} forwards {HEADER}"
        assert "proxy_set_header Cookie $archibald_cookie_upstream;" in body, (
            f"location {name} forwards the preview cookie"
        )


def _site_cookie_map() -> str:
    found = re.search(
        r"^map \$http_cookie \$archibald_cookie_upstream \{\n.*?^\}\n", render_site(), re.M | re.S
    )
    assert found, "the site has no map of the Cookie header the app gets"
    return found.group(0)


@pytest.fixture(scope="module")
def cookie_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nginx on loopback with the site's own Cookie map, answering what it would
    send upstream: the map is judged by nginx's PCRE, not by a copy of it in Python."""
    with loopback_nginx(
        tmp_path_factory.mktemp("nginx"),
        _site_cookie_map(),
        'return 200 "[$archibald_cookie_upstream]";',
    ) as url:
        yield url


@pytest.mark.parametrize(
    ("cookie", "upstream"),
    [
        (f"archibald_preview={TOKEN}", ""),
        (f"archibald_preview={TOKEN}; session=abc", "session=abc"),
        (f"session=abc; archibald_preview={TOKEN}", "session=abc"),
        (f"a=1; archibald_preview={TOKEN}; b=2", "a=1; b=2"),
        (f"a=1;archibald_preview={TOKEN};b=2", "a=1;b=2"),
        (f"a=1; ARCHIBALD_PREVIEW={TOKEN.upper()}", "a=1"),
        ("a=1; my_archibald_preview=x; b=2", "a=1; my_archibald_preview=x; b=2"),
        ("session=abc", "session=abc"),
        (None, ""),
    ],
    ids=[
        "alone",
        "first",
        "last",
        "middle",
        "unspaced",
        "upper-case",
        "other-name",
        "none",
        "no-header",
    ],
)
def test_the_app_never_gets_the_preview_cookie(
    cookie_edge: str, cookie: str | None, upstream: str
) -> None:
    request = urllib.request.Request(cookie_edge, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.read().decode() == f"[{upstream}]"
