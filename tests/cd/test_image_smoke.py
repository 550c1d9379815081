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
from harness import contract, testbed, wait

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


# Run inside the container: the mean CPU time (user + system) of five runs of each.
_CPU_PER_RUN = """
import json, resource, subprocess
def cpu(argv, n=5):
    def used():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime
    before = used()
    for _ in range(n):
        subprocess.run(argv, capture_output=True, check=True)
    return (used() - before) / n
print(json.dumps({
    "probe": cpu(["python", "-m", "archibald_app.healthcheck"]),
    "service": cpu(["python", "-c", "import archibald_app.lifecycle"]),
}))
"""


def test_the_image_probes_health_without_the_service() -> None:
    """Docker's HEALTHCHECK runs archibald_app.healthcheck (the standard library
    only: app/tests/test_healthcheck.py), and costs less CPU than importing
    the service, which the probe once did (a
    cut-over rollback waited 147 s for probes that timed out at load 15)."""
    ref = f"{testbed.PUSH_REGISTRY}/{testbed.APP_REPOSITORY}@{sandbox.digest('v2')}"
    docker = contract.docker
    test = json.loads(docker("image", "inspect", "-f", "{{json .Config.Healthcheck.Test}}", ref))
    assert test == ["CMD", "python", "-m", "archibald_app.healthcheck"]
    name = "archibald-probe-cost"
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, ref)
    try:
        # Docker's own verdict first: the HEALTHCHECK passes in the image.
        wait.until(
            f"Docker to report {name} healthy",
            lambda: docker("inspect", "-f", "{{.State.Health.Status}}", name) == "healthy",
            60,
            1,
            detail=lambda: docker("inspect", "-f", "{{json .State.Health}}", name),
        )
        cpu = json.loads(docker("exec", name, "python", "-c", _CPU_PER_RUN))
    finally:
        docker("rm", "-f", name, check=False)
    print(
        f"\n[healthcheck] CPU per probe {cpu['probe'] * 1000:.0f} ms; importing the "
        f"service alone {cpu['service'] * 1000:.0f} ms"
    )
    assert cpu["probe"] < cpu["service"]
