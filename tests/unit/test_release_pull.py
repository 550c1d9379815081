"""The release's image pull in check mode (issue 24): docker_image_pull with
pull=always reports changed in check mode whatever the host has, so a plan of a
no-op said changed=1. In check mode the task asks for the image only when it is
not on the host (not_present: changed only then); a real run always asks the
registry, so that a tag pushed again is seen. The whole stack's
test_7_engine.py plans a no-op release in check mode and finds changed=0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = Path(__file__).resolve().parents[2]


def _pull_task() -> dict[str, Any]:
    tasks = yaml.safe_load((ROOT / "roles/bluegreen/tasks/release.yml").read_text())
    block = next(t for t in tasks if "community.docker.docker_image_pull" in str(t.get("block")))
    task: dict[str, Any] = next(
        t for t in block["block"] if "community.docker.docker_image_pull" in t
    )
    return task


@pytest.mark.parametrize(("check_mode", "pull"), [(True, "not_present"), (False, "always")])
def test_check_mode_pulls_only_an_image_the_host_lacks(check_mode: bool, pull: str) -> None:
    given = _pull_task()["community.docker.docker_image_pull"]["pull"]
    templar = Templar(loader=DataLoader(), variables={"ansible_check_mode": check_mode})
    assert templar.template(trust_as_template(given)) == pull
