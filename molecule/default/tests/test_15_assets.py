"""Asset bridging on the live host (issue 24): a page loaded before a switch still
gets its own release's fingerprinted files after it. The edge asks the warm
colour for a static file the live colour answers 404 for: 200 with the old
release's file while the old colour is warm, the new page's files from the live
colour, a name neither release has 404; once the old colour is retired its
files are gone, and the answer is a 404, never a 5xx. The API is never bridged.

Starts from the fixture's known state (one colour serving a good version, no
canary, no maintenance) and leaves the host in it: the old release comes back
on its colour by rollback.yml."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    STATE_DIR,
    VERSIONS,
    ask,
    read_state,
    run_playbook,
    running_colors,
    serving,
    wait_for,
)

# The page's links to its files (the reference app's assets.py).
FILES = re.compile(r'"/static/(app\.[0-9a-f]{12}\.(?:js|css))"')
IMMUTABLE = "public, max-age=31536000, immutable"
NOT_FOUND = {"error": "no such file", "field": "path"}
UNKNOWN = "/static/app.000000000000.js"


@pytest.fixture
def known_state(host: Any) -> Iterator[tuple[str, str]]:
    """(colour, version) serving before the test, which must serve again after it."""
    state = read_state(host)
    color, version = serving()
    assert state["active"] == color and version in VERSIONS, (state["active"], color, version)
    assert not state.get("canary"), state.get("canary")
    assert not host.file("/etc/nginx/archibald/maintenance").exists
    yield color, version
    assert serving() == (color, version)


def page_files() -> tuple[str, list[str]]:
    """(version, files the page links) of the page the edge serves now."""
    status, headers, page = ask("/")
    assert status == 200, status
    files = FILES.findall(page.decode())
    assert len(files) == 2, page[:500]
    return headers["X-App-Version"], files


def test_a_page_loaded_before_a_switch_gets_its_files_after_it(
    host: Any, known_state: tuple[str, str]
) -> None:
    old_color, old = known_state
    new = next(v for v in VERSIONS if v != old)
    version, old_files = page_files()
    assert version == old
    for name in old_files:
        status, headers, _ = ask(f"/static/{name}")
        assert (status, headers["X-App-Version"]) == (200, old), name
        assert headers["Cache-Control"] == IMMUTABLE

    # The parts before may have marked any version bad.
    rc, out, seconds = run_playbook(
        "release.yml", "-e", f"app_version={new}", "-e", "app_force=true"
    )
    assert rc == 0, out[-3000:]
    new_color, served = serving()
    assert (served, new_color != old_color) == (new, True)
    version, new_files = page_files()
    assert version == new and not set(new_files) & set(old_files), (old_files, new_files)

    # The old page's files, from the warm colour; the new page's from the live one.
    bridged = {name: ask(f"/static/{name}") for name in old_files}
    live = {name: ask(f"/static/{name}") for name in new_files}
    unknown = ask(UNKNOWN)
    api = ask("/api/jobs/999999999999")
    print(
        f"\n[assets] release {old} -> {new} in {seconds:.0f} s; old files "
        f"{[(a[0], a[1].get('X-App-Color')) for a in bridged.values()]}, new files "
        f"{[(a[0], a[1].get('X-App-Color')) for a in live.values()]}, unknown {unknown[0]}, "
        f"API 404 from {api[1].get('X-App-Color')}"
    )
    for name, (status, headers, body) in bridged.items():
        assert status == 200, (name, status, body[:200])
        assert (headers["X-App-Color"], headers["X-App-Version"]) == (old_color, old), name
        assert headers["Cache-Control"] == IMMUTABLE
    for name, (status, headers, _) in live.items():
        assert (status, headers["X-App-Version"]) == (200, new), name
    assert unknown[0] == 404 and json.loads(unknown[2]) == NOT_FOUND, unknown
    # An API 404 is the live colour's own: never asked of the other colour.
    assert api[0] == 404 and api[1]["X-App-Color"] == new_color, api

    # The rollback window is over (the retirement timer's own script, its deadline
    # brought forward): the old colour stops, and with it its files.
    host.check_output(
        f"echo '{{\"deadline\": 1}}' > {STATE_DIR}/retire-{old_color}.json"
        " && systemctl start archibald-retire.service"
    )
    wait_for(
        f"the {old_color} colour to be retired",
        lambda: old_color not in running_colors(host),
        timeout=120,
        interval=1,
    )
    gone = {name: ask(f"/static/{name}") for name in old_files}
    print(f"[assets] after the retirement of {old_color}: {[a[0] for a in gone.values()]}")
    for name, (status, _, body) in gone.items():
        assert status == 404 and json.loads(body) == NOT_FOUND, (name, status, body[:200])
    for name in new_files:
        assert ask(f"/static/{name}")[0] == 200, name
    assert ask(UNKNOWN)[0] == 404

    # Back to the known state: the old release started again on its colour.
    rc, out, seconds = run_playbook("rollback.yml", "-e", "app_force=true")
    assert rc == 0, out[-3000:]
    print(f"[assets] rollback to {old} on {old_color} in {seconds:.0f} s")
    assert page_files()[0] == old
