"""The bluegreen preflight names the app secrets it refuses, and only their names:
run through the role on localhost (ansible-playbook, connection local)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "S3cret-preflight-marker"
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: bluegreen
        tasks_from: preflight
"""


def preflight(tmp_path: Path, secrets: dict[str, str]) -> subprocess.CompletedProcess[str]:
    play = tmp_path / "preflight.yml"
    play.write_text(PLAY)
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            *("-i", "localhost,", "-c", "local", str(play)),
            *("-e", json.dumps({"bluegreen_secret_env": secrets, "bluegreen_env": {"MODE": "x"}})),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
    )


def test_ordinary_names_and_values_pass(tmp_path: Path) -> None:
    # Letters r and n in a value once matched a mis-escaped [\r\n].
    result = preflight(tmp_path, {"DATABASE_URL": "postgres://rn@db/x", "TOKEN": MARKER})
    assert result.returncode == 0, result.stdout[-2000:]
    assert MARKER not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("secrets", "named"),
    [
        ({"APP_PORT": MARKER}, "APP_PORT"),
        ({"MODE": MARKER}, "MODE"),
        ({"1TOKEN": MARKER}, "1TOKEN"),
        ({"TOKEN": MARKER + "\nX=1"}, "TOKEN"),
        ({"TOKEN": MARKER + " "}, "TOKEN"),
    ],
    ids=["set-by-the-role", "also-in-bluegreen_env", "bad-name", "newline", "trailing-blank"],
)
def test_unusable_secrets_are_refused_by_name_only(
    tmp_path: Path, secrets: dict[str, str], named: str
) -> None:
    result = preflight(tmp_path, secrets)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out[-2000:]
    assert f"has names that cannot be used: {named}." in " ".join(out.split())
    assert MARKER not in out
