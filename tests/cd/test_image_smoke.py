"""The image job's checks, run here on the app image the harness builds from
app/Dockerfile (classic `docker build` on its local Debian base, since Docker
Hub and buildx are out of reach): the digest the registry reports is the
image's, and scripts/smoke-image.sh passes the good image by that digest and
fails a wrong version and an image that never gets healthy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cd import sandbox
from harness import testbed

ROOT = Path(__file__).resolve().parents[2]


def _smoke(ref: str, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts/smoke-image.sh"), ref, version],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        env=dict(os.environ, SMOKE_TIMEOUT_S="15"),
    )


def test_the_registry_digest_is_the_pushed_image() -> None:
    digest = sandbox.digest("v2")
    ref = f"{testbed.PUSH_REGISTRY}/{testbed.APP_REPOSITORY}"
    repo_digests = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .RepoDigests}}", f"{ref}:v2"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert f"{ref}@{digest}" in repo_digests


def test_smoke_passes_the_good_image_by_digest() -> None:
    ref = f"{testbed.PUSH_REGISTRY}/{testbed.APP_REPOSITORY}@{sandbox.digest('v2')}"
    result = _smoke(ref, "v2")
    print("\n" + result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "version v2" in result.stdout
    assert "SIGTERM drained job" in result.stdout


@pytest.mark.parametrize(
    ("version", "expected", "why"),
    [
        ("v2", "v3", "/health reports version 'v2', expected 'v3'"),
        ("bad-unhealthy", "bad-unhealthy", "/health did not answer ok within 15 s"),
    ],
)
def test_smoke_fails_a_wrong_or_unhealthy_image(version: str, expected: str, why: str) -> None:
    ref = f"{testbed.PUSH_REGISTRY}/{testbed.APP_REPOSITORY}@{sandbox.digest(version)}"
    result = _smoke(ref, expected)
    assert result.returncode != 0
    assert why in result.stderr
