"""Fingerprinted static files (assets.py): names that change with the version and
the bytes, the page linking them, and the frontend serving each under its name
only, with a year's immutable cache (the page itself is revalidated).

Two versions of the same build have different names, so a page of one never
gets the other's file: the edge asks the previous colour for it (asset
bridging; the whole stack's test_15_assets)."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from archibald_app import assets, frontend
from archibald_app.config import Config
from archibald_app.logs import EventLog
from archibald_app.metrics import Metrics
from archibald_app.service import ServiceState

PAGE = b'<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js"></script>'
LINKS = re.compile(r'"/static/(app\.[0-9a-f]{12}\.(?:js|css))"')


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("v1", b"body"), ("v1", b"body"), True),
        (("v1", b"body"), ("v2", b"body"), False),  # a new release: new names
        (("v1", b"body"), ("v1", b"body!"), False),  # a changed file: a new name
        (("v1", b""), ("v1", b"\0"), False),
    ],
)
def test_the_fingerprint_changes_with_version_and_bytes(
    a: tuple[str, bytes], b: tuple[str, bytes], same: bool
) -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", assets.fingerprint(*a))
    assert (assets.fingerprint(*a) == assets.fingerprint(*b)) is same


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("app.js", r"app\.[0-9a-f]{12}\.js"), ("app.css", r"app\.[0-9a-f]{12}\.css")],
)
def test_the_fingerprint_goes_before_the_suffix(name: str, pattern: str) -> None:
    assert re.fullmatch(pattern, assets.fingerprinted(name, "v1", b"x"))


def test_the_page_links_every_file_by_its_fingerprinted_name() -> None:
    files = {"app.js": b"js", "app.css": b"css"}
    made = assets.bundle("v1", files, PAGE)
    linked = LINKS.findall(made.page.decode())
    assert sorted(linked) == sorted(made.assets)
    assert "/static/app.js" not in made.page.decode()
    js = assets.fingerprinted("app.js", "v1", b"js")
    assert made.assets[js] == assets.Asset(media_type="text/javascript", body=b"js")


def test_a_file_the_page_does_not_link_is_a_broken_build() -> None:
    with pytest.raises(
        ValueError, match=r'index.html does not link /static/app.css \(expected "/static/app.css"\)'
    ):
        assets.bundle("v1", {"app.css": b"css"}, b'<script src="/static/app.js"></script>')


def test_two_versions_of_the_packaged_page_name_different_files() -> None:
    one, two = assets.load("v1"), assets.load("v2")
    assert len(one.assets) == len(assets.FILES) == len(two.assets)
    assert not set(one.assets) & set(two.assets)
    assert sorted(LINKS.findall(one.page.decode())) == sorted(one.assets)
    assert assets.load("v1") == one  # the same release: the same names


async def _frontend(version: str) -> TestClient:
    cfg = Config(color="blue", version=version)
    state = ServiceState(
        cfg=cfg,
        service="frontend",
        metrics=Metrics(service="frontend", color=cfg.color, version=cfg.version),
        log=EventLog(stream=io.StringIO()),
        instance="t",
    )
    client = TestClient(TestServer(frontend.make_app(state)))
    await client.start_server()
    return client


def test_the_frontend_serves_its_files_by_name_only_with_an_immutable_cache() -> None:
    async def main() -> None:
        old, new = await _frontend("v1"), await _frontend("v2")
        try:
            page = await old.get("/")
            assert page.headers["Cache-Control"] == "no-cache"
            names = LINKS.findall(await page.text())
            assert len(names) == len(assets.FILES)
            for name in names:
                answer = await old.get(f"/static/{name}")
                assert answer.status == 200, name
                assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                assert (await old.head(f"/static/{name}")).status == 200
                # The next version does not have it: what the edge's bridging is for.
                missing = await new.get(f"/static/{name}")
                assert missing.status == 404
                assert await missing.json() == {"error": "no such file", "field": "path"}
                assert "immutable" not in missing.headers.get("Cache-Control", "")
            # The plain names are gone: one name per file and release.
            for plain in assets.FILES:
                assert (await old.get(f"/static/{plain}")).status == 404
            metrics = await (await old.get("/metrics")).text()
            assert 'route="/static/{name}"' in metrics  # the template, never the file name
        finally:
            await old.close()
            await new.close()

    asyncio.run(main())
