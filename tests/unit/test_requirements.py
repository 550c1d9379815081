"""requirements.yml (for Galaxy users) must agree with the pinned `ansible` package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def bundled_collections() -> dict[str, str]:
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    out = subprocess.run(
        [str(galaxy), "collection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = {}
    for collections in json.loads(out).values():
        for name, meta in collections.items():
            found.setdefault(name, meta["version"])
    return found


def test_requirements_yml_matches_the_bundled_collections() -> None:
    wanted = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    have = bundled_collections()
    mismatches = [
        f"{c['name']}: requirements.yml says {c['version']}, "
        f"the pinned ansible package brings {have.get(c['name'], 'nothing')}"
        for c in wanted
        if have.get(c["name"]) != str(c["version"])
    ]
    assert not mismatches, "update requirements.yml:\n" + "\n".join(mismatches)


def test_every_collection_used_is_listed() -> None:
    listed = {
        c["name"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    }
    used: set[str] = set()
    for path in (
        list(ROOT.glob("roles/**/*.yml"))
        + list(ROOT.glob("playbooks/*.yml"))
        + list(ROOT.glob("*.yml"))
        + list(ROOT.glob("molecule/**/*.yml"))
    ):
        for line in path.read_text().splitlines():
            token = line.strip().rstrip(":")
            parts = token.split(".")
            if (
                len(parts) == 3
                and parts[0] in {"community", "ansible"}
                and parts[1] != "builtin"
                and " " not in token
            ):
                used.add(".".join(parts[:2]))
    missing = sorted(used - listed)
    assert not missing, f"collections used but missing from requirements.yml: {missing}"
