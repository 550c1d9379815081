"""The host's retirement script, rendered from its template and run against a temp dir.

A fake `docker` on PATH records what the script asks of the engine.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from ansible.module_utils import bluegreen as core
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "bluegreen"
FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_CALLS"
case "$1 $2" in
  "image ls") cat "$DOCKER_IMAGES" 2>/dev/null ;;
  "image rm") grep -qx "$3" "$DOCKER_IN_USE" 2>/dev/null && exit 1 ;;
  ps*) echo "id-$(echo "$*" | sed 's/.*org.archibald.color=//')" ;;
esac
exit 0
"""


def render(tmp_path: Path, **overrides: str) -> str:
    """retire.py.j2 rendered by Ansible's templar with the role's defaults and vars."""
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables |= yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    variables |= {
        "_bluegreen_dir": str(tmp_path / "state"),
        "_bluegreen_lib_dir": str(tmp_path / "lib"),
        "bluegreen_upstreams_file": str(tmp_path / "upstreams.conf"),
        "ansible_managed": "managed",
        "app_version": "v1",
        **overrides,
    }
    source = trust_as_template((ROLE / "templates" / "retire.py.j2").read_text())
    return str(Templar(loader=DataLoader(), variables=variables).template(source))


def test_inventory_values_are_python_literals_whatever_they_hold(tmp_path: Path) -> None:
    """A quote or a backslash in a path or an image name is data, never code (issue 29)."""
    odd = 'registry:5000/app"; import os; os.system("true") #\\'
    module = ast.parse(render(tmp_path, bluegreen_image=odd, bluegreen_upstreams_file='/x/"up'))
    values = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in module.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("REPOSITORY", "UPSTREAMS", "DIR")
    }
    assert values == {
        "REPOSITORY": odd,
        "UPSTREAMS": '/x/"up',
        "DIR": str(tmp_path / "state"),
    }


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A temp 'host': the app dir, the upstream file, the library and the rendered script."""
    (tmp_path / "state").mkdir()
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "bluegreen.py").write_text((ROOT / "module_utils" / "bluegreen.py").read_text())
    (tmp_path / "retire.py").write_text(render(tmp_path))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(FAKE_DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    return tmp_path


def state(active: str) -> str:
    record = core.empty_state("archibald", ["blue", "green"])
    record["active"] = active
    return core.render_state(record)


def run(host: Path) -> tuple[int, list[str], str]:
    calls = host / "docker-calls"
    env = dict(
        os.environ,
        PATH=f"{host / 'bin'}:{os.environ['PATH']}",
        DOCKER_CALLS=str(calls),
        DOCKER_IMAGES=str(host / "images.jsonl"),
        DOCKER_IN_USE=str(host / "in-use"),
    )
    result = subprocess.run(
        [sys.executable, str(host / "retire.py")], env=env, capture_output=True, text=True
    )
    made = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, made, result.stdout + result.stderr


def due(host: Path, color: str) -> None:
    (host / "state" / f"retire-{color}.json").write_text(json.dumps({"deadline": 1}))


def test_a_due_inactive_colour_is_stopped_under_the_lock(host: Path) -> None:
    (host / "state" / "state.json").write_text(state("blue"))
    due(host, "green")
    rc, calls, out = run(host)
    assert rc == 0, out
    assert any(c.startswith("stop -t 75 id-green") for c in calls), calls
    assert '"retire_done"' in out
    assert not (host / "state" / "retire-green.json").exists()
    assert not (host / "state" / "release.lock").exists(), "the timer left its lock"


def test_a_held_lock_defers_the_retirement(host: Path) -> None:
    (host / "state" / "state.json").write_text(state("blue"))
    due(host, "green")
    held = {
        "owner": "release X",
        "token": "t",
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": core.iso(datetime.now(UTC) + timedelta(minutes=5)),
    }
    (host / "state" / "release.lock").write_text(json.dumps(held))
    rc, calls, out = run(host)
    assert rc == 0 and calls == [], calls
    assert '"retire_deferred"' in out and "held by release X" in out
    assert (host / "state" / "retire-green.json").exists()


@pytest.mark.parametrize(
    ("active", "marker", "reason"),
    [
        ("green", None, "active again"),
        ("blue", "green", "upstream file points at green"),
    ],
)
def test_what_serves_is_never_stopped(
    host: Path, active: str, marker: str | None, reason: str
) -> None:
    (host / "state" / "state.json").write_text(state(active))
    if marker:
        (host / "upstreams.conf").write_text(core.render_marker(marker, "v2", None) + "\n")
    due(host, "green")
    rc, calls, out = run(host)
    assert rc == 0, out
    assert not any(c.startswith("stop") for c in calls), calls
    assert '"retire_skipped"' in out and reason in out


def test_after_a_retirement_old_images_are_pruned_and_recorded_ones_kept(host: Path) -> None:
    record = core.empty_state("archibald", ["blue", "green"])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(1, 9):  # v1..v8, the last two in the colours
        params = {
            "action": "switch",
            "color": ["blue", "green"][n % 2],
            "record": {"version": f"v{n}", "digest": f"sha256:d{n}"},
        }
        record, _ = core.apply_action(record, params, now + timedelta(minutes=n))
    (host / "state" / "state.json").write_text(core.render_state(record))
    repo = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["bluegreen_image"]
    rows = [
        {"ID": f"sha256:i{n}", "Repository": repo, "Tag": f"v{n}", "Digest": f"sha256:d{n}"}
        for n in range(1, 9)
    ]
    (host / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (host / "in-use").write_text("sha256:i2\n")  # a stopped container still uses it
    due(host, "green")  # v7 ran there; blue (v8) is active
    rc, calls, out = run(host)
    assert rc == 0, out
    assert any(c.startswith("stop -t 75 id-green") for c in calls), calls
    removed = sorted(c.split()[-1] for c in calls if c.startswith("image rm"))
    # Kept: v4..v8, the last five released (default), v7 and v8 among them.
    assert removed == ["sha256:i1", "sha256:i2", "sha256:i3"]
    done = [json.loads(line) for line in out.splitlines() if '"prune_done"' in line]
    assert done and done[0]["removed"] == 2 and done[0]["in_use"] == 1 and done[0]["kept"] == 5


def test_nothing_is_pruned_when_nothing_was_retired(host: Path) -> None:
    (host / "state" / "state.json").write_text(state("blue"))
    rc, calls, _ = run(host)
    assert rc == 0 and not any(c.startswith("image") for c in calls)
