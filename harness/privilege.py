"""What a container the roles started may do, seen from docker inspect and from
inside it: the one owner of the least-privilege checks (the whole stack's
colours in test_6_security.py, the accessories scenario's services).

``seen(host, name)`` gathers it for a testinfra host; ``LEAST`` is what every
hardened container shows whatever its image, so a test compares
``seen(...) == {**LEAST, "uid": ..., "Memory": ..., "PidsLimit": ...}`` and an
assertion names every field that differs.
"""

from __future__ import annotations

import json
from typing import Any

NO_CAPABILITIES = "0" * 16  # /proc/<pid>/status's capability sets, in hexadecimal

LEAST: dict[str, Any] = {
    "CapDrop": ["ALL"],
    "CapAdd": [],
    "SecurityOpt": ["no-new-privileges"],
    "ReadonlyRootfs": True,
    "Tmpfs": ["/tmp"],
    "swap included": True,  # MemorySwap equals Memory: no swap beyond the limit
    "NoNewPrivs": "1",
    "CapEff": NO_CAPABILITIES,
    "CapBnd": NO_CAPABILITIES,
    "root read-only": True,
    "tmp writable": True,
    "docker socket": False,
}


def status(host: Any, name: str) -> dict[str, str]:
    """/proc/1/status of a container's main process, field -> value."""
    out = host.check_output(f"docker exec {name} cat /proc/1/status")
    return {k: v.strip() for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln)}


def seen(host: Any, name: str) -> dict[str, Any]:
    """What container `name` may do: its HostConfig's limits and, from inside, its
    main process's user and capabilities, whether it can write its root and /tmp,
    and whether Docker's socket is there."""
    config = json.loads(host.check_output(f"docker inspect {name}"))[0]["HostConfig"]
    inside = status(host, name)
    root = host.run(f"docker exec {name} sh -c ': > /probe'")
    tmp = host.run(f"docker exec {name} sh -c ': > /tmp/probe && rm /tmp/probe'")
    return {
        "CapDrop": config["CapDrop"],
        "CapAdd": config["CapAdd"] or [],
        "SecurityOpt": config["SecurityOpt"],
        "ReadonlyRootfs": config["ReadonlyRootfs"],
        "Tmpfs": sorted(config["Tmpfs"] or {}),
        "Memory": config["Memory"],
        "swap included": config["MemorySwap"] == config["Memory"] > 0,
        "PidsLimit": config["PidsLimit"],
        "uid": inside["Uid"].split()[0],
        "NoNewPrivs": inside["NoNewPrivs"],
        "CapEff": inside["CapEff"],
        "CapBnd": inside["CapBnd"],
        "root read-only": root.rc != 0 and "Read-only file system" in root.stderr,
        "tmp writable": tmp.rc == 0,
        "docker socket": host.run(f"docker exec {name} test -e /var/run/docker.sock").rc == 0,
    }
