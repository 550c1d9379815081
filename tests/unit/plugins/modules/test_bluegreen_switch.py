"""Unit tests for library/bluegreen_switch.py: write, test, reload, all under the lock."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bluegreen_switch
import pytest
from ansible.module_utils import bluegreen as core

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
BLUE = "upstream archibald_backend { server 127.0.0.1:8101; }\n"
GREEN = "upstream archibald_backend { server 127.0.0.1:8201; }\n"


class Nginx:
    """Records the commands run; `nginx -t` fails when told to."""

    def __init__(self, test_rc: int = 0, reload_rc: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.rc = {"nginx": test_rc, "systemctl": reload_rc}

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        rc = self.rc[argv[0]]
        return rc, "", "" if rc == 0 else "nginx: [emerg] unexpected '}' in upstreams.conf:3"


def setup(tmp_path: Path, token: str = "t1") -> Path:
    lock = {
        "owner": "run A",
        "token": token,
        "acquired_at": core.iso(NOW),
        "expires_at": core.iso(NOW + timedelta(seconds=60)),
    }
    (tmp_path / core.LOCK_FILE).write_text(json.dumps(lock))
    upstreams = tmp_path / "upstreams.conf"
    upstreams.write_text(core.render_marker("blue", "v1", None) + "\n" + BLUE)
    return upstreams


def params(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "dir": str(tmp_path),
        "token": "t1",
        "upstreams_file": str(tmp_path / "upstreams.conf"),
        "content": GREEN,
        "color": "green",
        "version": "v2",
        "digest": "sha256:bb",
        "reload": False,
        "test_command": ["nginx", "-t"],
        "reload_command": ["systemctl", "reload", "nginx"],
        **extra,
    }


def switch(tmp_path: Path, nginx: Nginx, check: bool = False, **extra: Any) -> dict[str, Any]:
    return bluegreen_switch.run(params(tmp_path, **extra), lambda: NOW, nginx, check, os.replace)


def test_switch_writes_the_marker_tests_and_reloads(tmp_path: Path) -> None:
    upstreams = setup(tmp_path)
    nginx = Nginx()
    result = switch(tmp_path, nginx)
    assert result["changed"] and result["reloaded"]
    assert nginx.calls == [["nginx", "-t"], ["systemctl", "reload", "nginx"]]
    assert core.parse_marker(upstreams.read_text()) == {
        "color": "green",
        "version": "v2",
        "digest": "sha256:bb",
    }
    assert upstreams.read_text().endswith(GREEN)


def test_an_unchanged_file_is_not_reloaded_unless_asked(tmp_path: Path) -> None:
    setup(tmp_path)
    switch(tmp_path, Nginx())
    nginx = Nginx()
    assert not switch(tmp_path, nginx)["changed"] and nginx.calls == []
    forced = switch(tmp_path, nginx, reload=True)
    assert forced["reloaded"] and nginx.calls[-1] == ["systemctl", "reload", "nginx"]


@pytest.mark.parametrize(
    ("test_rc", "reload_rc", "message"),
    [
        (1, 0, "nginx refused the switch to green .*unexpected '}'.*put back"),
        (0, 1, "nginx did not reload"),
    ],
)
def test_a_refused_switch_puts_the_old_file_back(
    tmp_path: Path, test_rc: int, reload_rc: int, message: str
) -> None:
    upstreams = setup(tmp_path)
    before = upstreams.read_text()
    with pytest.raises(core.BlueGreenError, match=message):
        switch(tmp_path, Nginx(test_rc, reload_rc))
    assert upstreams.read_text() == before


def test_a_run_that_lost_the_lock_writes_and_reloads_nothing(tmp_path: Path) -> None:
    upstreams = setup(tmp_path, token="someone-else")
    before = upstreams.read_text()
    nginx = Nginx()
    with pytest.raises(core.LockLost, match="taken over"):
        switch(tmp_path, nginx)
    assert upstreams.read_text() == before and nginx.calls == []


def test_check_mode_reports_without_writing(tmp_path: Path) -> None:
    upstreams = setup(tmp_path)
    before = upstreams.read_text()
    nginx = Nginx()
    result = switch(tmp_path, nginx, check=True)
    assert result["changed"] and not result["reloaded"]
    assert upstreams.read_text() == before and nginx.calls == []


def test_the_switch_writes_each_colours_blocks_for_the_watchdog_when_they_changed(
    tmp_path: Path,
) -> None:
    setup(tmp_path)
    blocks = {"blue": BLUE, "green": GREEN}

    def switch(check: bool = False, **extra: Any) -> dict[str, Any]:
        return bluegreen_switch.run(
            params(tmp_path, blocks=blocks, **extra), lambda: NOW, Nginx(), check, os.replace
        )

    assert switch(check=True)["blocks"] == ["blue", "green"]
    assert not (tmp_path / "upstreams-green.conf").exists(), "check mode wrote a block"
    first = switch()
    assert first["changed"] and first["blocks"] == ["blue", "green"]
    for color, text in blocks.items():
        path = Path(core.watchdog_blocks_path(str(tmp_path), color))
        assert path.read_text() == text and oct(path.stat().st_mode & 0o777) == "0o600"
    again = switch()
    assert again["blocks"] == [] and not again["changed"]
    blocks["blue"] = BLUE.replace("8101", "8111")
    assert switch()["blocks"] == ["blue"]


def test_a_failed_switch_writes_no_blocks(tmp_path: Path) -> None:
    setup(tmp_path)
    with pytest.raises(core.BlueGreenError, match="refused"):
        bluegreen_switch.run(
            params(tmp_path, blocks={"blue": BLUE, "green": GREEN}),
            lambda: NOW,
            Nginx(test_rc=1),
            False,
            os.replace,
        )
    assert not (tmp_path / "upstreams-green.conf").exists()
