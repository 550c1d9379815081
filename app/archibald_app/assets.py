"""The page's static files under fingerprinted names, and the page that links them.

Each file of `static/` (FILES) is served as `<stem>.<fingerprint><suffix>`,
e.g. `app.3f9a0c1d2e4b.js`: the fingerprint is the first 12 hex digits of
SHA-256 over the version and the file's bytes, so a release never serves
another release's file under the same name. A browser may therefore keep a
file for a year (`Cache-Control: immutable`), and a page of the previous
release, loaded before a switch, asks for names only that release has: the
edge asks the previous colour for them while it is warm (asset bridging,
OPERATIONS.md). The page's links are rewritten to these names at start-up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

# The page's static files: name in static/ -> media type.
FILES = {"app.js": "text/javascript", "app.css": "text/css"}
PAGE = "index.html"
PREFIX = "/static/"
# A fingerprinted name's answer may be cached for a year, never revalidated;
# the page itself is revalidated every time, so that it names the live files.
IMMUTABLE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"


@dataclass(frozen=True)
class Asset:
    media_type: str
    body: bytes


@dataclass(frozen=True)
class Bundle:
    page: bytes
    # Fingerprinted name (app.3f9a0c1d2e4b.js) -> the file.
    assets: dict[str, Asset]


def fingerprint(version: str, body: bytes) -> str:
    """12 hex digits that change with the version and with the file's bytes."""
    return hashlib.sha256(version.encode() + b"\0" + body).hexdigest()[:12]


def fingerprinted(name: str, version: str, body: bytes) -> str:
    """`app.js` -> `app.<fingerprint>.js`."""
    path = PurePosixPath(name)
    return f"{path.stem}.{fingerprint(version, body)}{path.suffix}"


def bundle(version: str, files: dict[str, bytes], page: bytes) -> Bundle:
    """The files under their fingerprinted names, and `page` with every link
    `"/static/<name>"` rewritten to the fingerprinted name. A file the page
    does not link is a broken build: ValueError names it."""
    assets: dict[str, Asset] = {}
    for name, body in files.items():
        served = fingerprinted(name, version, body)
        link = f'"{PREFIX}{name}"'.encode()
        if link not in page:
            raise ValueError(f"{PAGE} does not link {PREFIX}{name} (expected {link.decode()})")
        page = page.replace(link, f'"{PREFIX}{served}"'.encode())
        assets[served] = Asset(media_type=FILES[name], body=body)
    return Bundle(page=page, assets=assets)


def load(version: str) -> Bundle:
    """The packaged page and files (static/) for `version`."""
    static = resources.files(__package__).joinpath("static")
    files = {name: static.joinpath(name).read_bytes() for name in FILES}
    return bundle(version, files, static.joinpath(PAGE).read_bytes())
