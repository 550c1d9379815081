"""Converge the whole stack once; start every lane's host from a copy of it.

`make test` runs the whole-stack tests as three lanes, each on a host of its
own (harness/scenarios.py, STACK_LANES). Each host used to converge the same
playbook with the same variables from nothing. Now the first slot's host
converges once (and Molecule's idempotence check runs on it, a real converge),
then ``take`` stops it cleanly (systemd's shutdown: the inner Docker stops the
app's containers), commits its filesystem as an image, copies its
/var/lib/docker volume (the volume is not in the image) and starts it again:
a reboot, which test_5_faults tests on its own. The other slots' hosts are
created from that image with a copy of that volume (``seed``), so every lane
starts from the same converged host. GitHub's jobs (one part each) and a single
part run here converge as before.

A step that waits names what it waited for; a failed or stopped build marks
the snapshot failed, so that the lanes stop at once and say why.

Usage: python -m harness.snapshot take | seed | serving | fail WHY | reset
  (the host is $ARCHIBALD_STACK_HOST, its published port $ARCHIBALD_STACK_PORT)
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.wait import WaitTimeout, until

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".cache" / "stack-snapshot.json"
# The image and the volume the lanes' hosts start from.
IMAGE = "archibald/stack-snapshot:12"
VOLUME = "archibald-stack-snapshot-docker"
# What copies a volume: the harness's Debian image, with the capability that
# reads and writes the overlay whiteouts' trusted.* attributes of the inner
# Docker's layers (cp reports any attribute it could not keep).
COPIER = "archibald/debian:12"
# Set by harness/scenarios.py: a file that exists once every role scenario has
# started, so that the lanes' load tests do not run beside their converges.
GATE_ENV = "ARCHIBALD_STACK_GATE"
# How long a lane waits for the build (its converge beside the role scenarios
# took 7-10 min in CI) and for its host's edge after a boot.
BUILD_WAIT_S = 1500
EDGE_WAIT_S = 240


class SnapshotError(Exception):
    """What went wrong and what to do, for the lane's log."""


def host() -> str:
    return os.environ.get("ARCHIBALD_STACK_HOST", "default-deb12")


def volume_of(name: str) -> str:
    """The host's /var/lib/docker volume, as molecule/default/molecule.yml names it."""
    return f"molecule-{name}-docker"


def docker(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise SnapshotError(
            f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-1500:]}"
        )
    return result.stdout.strip()


def copy_volume(source: str, target: str) -> None:
    docker("volume", "rm", "-f", target)
    docker("volume", "create", target)
    docker(
        *("run", "--rm", "--cap-add", "SYS_ADMIN", "--network", "none"),
        *("-v", f"{source}:/from:ro", "-v", f"{target}:/to", COPIER),
        *("cp", "-dR", "--preserve=all", "/from/.", "/to/"),
        timeout=900,
    )


def write_state(state: str, **facts: object) -> None:
    STATE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"state": state, "at": time.time(), **facts}))
    tmp.replace(STATE)


def read_state() -> dict[str, object]:
    try:
        state: dict[str, object] = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {"state": "building"}
    return state


def take() -> None:
    name = host()
    started = time.monotonic()
    docker("stop", "-t", "120", name, timeout=180)
    docker("commit", name, IMAGE)
    copy_volume(volume_of(name), VOLUME)
    docker("start", name)
    size = docker("image", "inspect", "--format", "{{.Size}}", IMAGE)
    write_state("ready", host=name, image=IMAGE, volume=VOLUME)
    print(
        f"snapshot: {name} stopped, committed as {IMAGE} ({int(size) / 2**20:.0f} MiB) and its "
        f"/var/lib/docker copied to {VOLUME} in {time.monotonic() - started:.0f} s; "
        f"{name} started again",
        flush=True,
    )


def decided() -> dict[str, object] | None:
    """The build's state once it is ready or failed; None while it builds."""
    state = read_state()
    return None if state["state"] == "building" else state


def built() -> dict[str, object]:
    """Wait for the build; raise with its reason if it failed."""
    started = time.monotonic()
    try:
        state = until(
            "the whole stack's snapshot (harness/snapshot.py take on the first slot's host)",
            decided,
            BUILD_WAIT_S,
            2,
        )
    except WaitTimeout as exc:
        raise SnapshotError(f"{exc}: see the default:snapshot log") from None
    assert state is not None  # until() returns a true value
    if state["state"] != "ready":
        raise SnapshotError(
            f"the whole stack's snapshot was not made ({state.get('why', 'no reason given')}): "
            "this lane's tests cannot run; the default:snapshot log says why"
        )
    print(f"snapshot: ready after {time.monotonic() - started:.0f} s of waiting", flush=True)
    return state


def seed() -> None:
    name = host()
    built()
    started = time.monotonic()
    copy_volume(VOLUME, volume_of(name))
    print(
        f"snapshot: {volume_of(name)} is a copy of {VOLUME} "
        f"({time.monotonic() - started:.0f} s); {name} is created from {IMAGE}",
        flush=True,
    )


def edge_health(port: str) -> dict[str, object]:
    """The edge's /health document (urllib raises on anything but a 2xx)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(
        f"https://127.0.0.1:{port}/health", timeout=5, context=context
    ) as answer:
        body: dict[str, object] = json.loads(answer.read())
        return body


def serving() -> None:
    """Wait for the build, for the gate (every role scenario started), then for the
    host's edge to serve /health after its boot."""
    built()
    gate = os.environ.get(GATE_ENV)
    if gate:
        started = time.monotonic()
        until(f"the role scenarios to have started ({gate})", Path(gate).exists, 3600, 2)
        print(f"snapshot: gate open after {time.monotonic() - started:.0f} s", flush=True)
    port = os.environ.get("ARCHIBALD_STACK_PORT", "18443")
    started = time.monotonic()
    body = until(
        f"{host()}'s edge to answer /health on 127.0.0.1:{port} after its boot",
        lambda: edge_health(port),
        EDGE_WAIT_S,
        1,
        ignore=(urllib.error.URLError, OSError, ValueError),
    )
    print(
        f"snapshot: {host()} serves {body.get('color')} {body.get('version')} "
        f"{time.monotonic() - started:.0f} s after the wait began",
        flush=True,
    )


def main(argv: list[str]) -> int:
    action = argv[0] if argv else ""
    try:
        if action == "take":
            take()
        elif action == "seed":
            seed()
        elif action == "serving":
            serving()
        elif action == "fail":
            write_state("failed", why=" ".join(argv[1:]) or "the build failed")
        elif action == "reset":
            STATE.unlink(missing_ok=True)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (SnapshotError, WaitTimeout, subprocess.TimeoutExpired) as exc:
        if action == "take":
            write_state("failed", why=str(exc)[:500])
        print(f"snapshot {action}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
