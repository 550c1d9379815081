# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the accessories role (shared services that are not coloured).

``accessories_problems`` checks the declared services and names what is wrong
in sentences a person can act on (the role's preflight asserts the list is
empty); ``accessories_scrape_configs`` turns the services that declare
metrics into one Prometheus scrape job (group_vars/all.yml hands it to the
prometheus role's ``prometheus_extra_scrape_configs``). Documentation:
``accessories_problems.yml`` and ``accessories_scrape_configs.yml`` beside
this file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

FIELDS = {
    "image",
    "port",
    "command",
    "volumes",
    "env",
    "health",
    "metrics",
    "memory",
    "stop_timeout",
    "user",
    "cap_add",
    "read_only",
    "tmpfs",
    "pids",
}
HEALTH_FIELDS = {"cmd", "interval", "timeout", "retries", "start_period"}
METRICS_FIELDS = {"port", "path"}
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DURATION_RE = re.compile(r"^[0-9]+(ms|s|m|h)$")
MEMORY_RE = re.compile(r"^[0-9]+[bkmg]?$", re.IGNORECASE)
CAPABILITY_RE = re.compile(r"^(CAP_)?[A-Z][A-Z_]+$")
TMPFS_RE = re.compile(r"^/[^:\s]*(:[a-z0-9=,]+)?$")
JOB_NAME = "accessories"


def _port(value: Any) -> int | None:
    """The port as an int, or None when it is not one (booleans are not ports)."""
    if isinstance(value, bool):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def _check_one(name: str, spec: Any) -> list[str]:
    """What is wrong with one service's settings, apart from port collisions."""
    where = f"accessories_services.{name}"
    if not NAME_RE.match(str(name)):
        return [
            f"{where}: the name must be 2-32 lower-case letters, digits and '-', starting with a "
            "letter (it names the container, its volumes and its env file)"
        ]
    if not isinstance(spec, Mapping):
        return [f"{where} must be a mapping with at least image and port"]
    found: list[str] = []
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        found.append(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}"
        )
    if not isinstance(spec.get("image"), str) or not spec.get("image"):
        found.append(
            f"{where}.image is missing: the image reference to run, e.g. <registry>/redis:7"
        )
    if _port(spec.get("port")) is None:
        found.append(
            f"{where}.port must be the loopback port it serves on (1-65535), "
            f"got {spec.get('port')!r}"
        )
    command = spec.get("command")
    if command is not None and (
        not isinstance(command, list) or not all(isinstance(a, str) for a in command)
    ):
        found.append(f"{where}.command must be a list of strings (the image's arguments)")
    volumes = spec.get("volumes") or {}
    if not isinstance(volumes, Mapping):
        found.append(f"{where}.volumes must map a volume name to a path in the container")
    else:
        for volume, path in volumes.items():
            if not NAME_RE.match(str(volume)) or not str(path).startswith("/"):
                found.append(
                    f"{where}.volumes.{volume}: names are lower-case letters, digits and '-', "
                    f"paths absolute (got {path!r})"
                )
    env = spec.get("env") or {}
    if not isinstance(env, Mapping):
        found.append(f"{where}.env must map variable names to strings")
    else:
        for key, value in env.items():
            if not ENV_NAME_RE.match(str(key)) or not isinstance(value, str):
                found.append(
                    f"{where}.env.{key}: names are letters, digits and _, values strings "
                    "(quote yes, no and numbers)"
                )
    health = spec.get("health")
    if health is not None:
        if not isinstance(health, Mapping) or not health.get("cmd"):
            found.append(
                f"{where}.health needs cmd: a list run as it is (e.g. [redis-cli, ping]) "
                "or a string run by /bin/sh"
            )
        else:
            bad = sorted(set(health) - HEALTH_FIELDS)
            bad += [
                k
                for k in ("interval", "timeout", "start_period")
                if k in health and not DURATION_RE.match(str(health[k]))
            ]
            if "retries" in health and _port(health["retries"]) is None:
                bad.append("retries")
            if bad:
                found.append(
                    f"{where}.health: {', '.join(bad)} invalid; fields are cmd, interval, timeout, "
                    "start_period (durations like 10s) and retries (a number)"
                )
    metrics = spec.get("metrics")
    if metrics is not None and (
        not isinstance(metrics, Mapping)
        or sorted(set(metrics) - METRICS_FIELDS)
        or _port(metrics.get("port")) is None
        or not str(metrics.get("path", "/metrics")).startswith("/")
    ):
        found.append(
            f"{where}.metrics must be {{port: <loopback port>, path: /metrics}} (path optional)"
        )
    memory = spec.get("memory")
    if memory is not None and not MEMORY_RE.match(str(memory)):
        found.append(f"{where}.memory must be a Docker memory size such as 256m, got {memory!r}")
    if "stop_timeout" in spec and _port(spec["stop_timeout"]) is None:
        found.append(f"{where}.stop_timeout must be a number of seconds")
    return found + _check_privilege(where, spec)


def _strings_matching(value: Any, pattern: re.Pattern[str]) -> bool:
    """A list whose every item is a string the pattern matches (an empty list is)."""
    return isinstance(value, list) and all(
        isinstance(item, str) and pattern.match(item) for item in value
    )


def _check_privilege(where: str, spec: Mapping[str, Any]) -> list[str]:
    """What is wrong with the fields that give a service back some privilege."""
    found: list[str] = []
    user = spec.get("user")
    if user is not None and (not isinstance(user, str) or not user):
        found.append(f"{where}.user must be a user name or uid[:gid] inside the image")
    cap_add = spec.get("cap_add", [])
    if not _strings_matching(cap_add, CAPABILITY_RE):
        found.append(
            f"{where}.cap_add must list capability names such as [CHOWN, SETUID] (every other "
            f"one is dropped), got {cap_add!r}"
        )
    if "read_only" in spec and not isinstance(spec["read_only"], bool):
        found.append(f"{where}.read_only must be true or false")
    tmpfs = spec.get("tmpfs", [])
    if not _strings_matching(tmpfs, TMPFS_RE):
        found.append(
            f"{where}.tmpfs must list writable in-memory paths such as /run:size=16m, got {tmpfs!r}"
        )
    if "pids" in spec and _port(spec["pids"]) is None:
        found.append(f"{where}.pids must be the most processes and threads, e.g. 256")
    return found


def _ports(name: str, spec: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The loopback ports one service takes, each with the setting that names it."""
    taken: list[tuple[str, int]] = []
    port = _port(spec.get("port"))
    if port is not None:
        taken.append((f"accessories_services.{name}.port", port))
    metrics = spec.get("metrics")
    if isinstance(metrics, Mapping):
        metrics_port = _port(metrics.get("port"))
        if metrics_port is not None and metrics_port != port:
            taken.append((f"accessories_services.{name}.metrics.port", metrics_port))
    return taken


def accessories_problems(
    services: Any,
    reserved_ports: Any = (),
    app_ports: Any = None,
) -> list[str]:
    """Sentences naming what is wrong with ``accessories_services``; empty when all is well.

    ``reserved_ports``: ports the rest of the stack uses (accessories_reserved_ports).
    ``app_ports``: bluegreen_ports (colour -> service -> port).
    """
    if services is None:
        return []
    if not isinstance(services, Mapping):
        return [
            "accessories_services must map a name to its settings, e.g. "
            "{redis: {image: <registry>/redis:7, port: 6379}}; got "
            f"{type(services).__name__}"
        ]
    found: list[str] = []
    owners: dict[int, str] = {}
    for port in reserved_ports or ():
        if _port(port) is not None:
            owners[int(port)] = "accessories_reserved_ports (the rest of the stack)"
    if app_ports is not None and not isinstance(app_ports, Mapping):
        raise AnsibleFilterError(
            f"app_ports must be bluegreen_ports (a mapping); got {app_ports!r}"
        )
    for color, by_service in (app_ports or {}).items():
        for service, port in (by_service or {}).items():
            if _port(port) is not None:
                owners[int(port)] = f"bluegreen_ports.{color}.{service} (the app)"
    for name in sorted(services, key=str):
        spec = services[name]
        problems = _check_one(str(name), spec)
        found += problems
        if problems and not isinstance(spec, Mapping):
            continue
        for setting, port in _ports(str(name), spec):
            if port in owners:
                found.append(
                    f"{setting} is {port}, which {owners[port]} already uses: choose a free "
                    "loopback port"
                )
            else:
                owners[port] = setting
    return found


def accessories_scrape_configs(services: Any, job_name: str = JOB_NAME) -> list[dict[str, Any]]:
    """One Prometheus scrape job for the services that declare ``metrics``.

    Each target is 127.0.0.1:<metrics.port> labelled ``accessory: <name>``; a
    path other than /metrics rides on the target's ``__metrics_path__`` label.
    No service with metrics: no job (an empty list).
    """
    if not services:
        return []
    if not isinstance(services, Mapping):
        raise AnsibleFilterError(
            f"accessories_scrape_configs expects accessories_services (a mapping); got {services!r}"
        )
    targets = []
    for name in sorted(services, key=str):
        metrics = (services[name] or {}).get("metrics")
        if not metrics:
            continue
        port = _port(metrics.get("port"))
        if port is None:
            raise AnsibleFilterError(
                f"accessories_services.{name}.metrics.port must be a port, "
                f"got {metrics.get('port')!r}"
            )
        labels = {"accessory": str(name)}
        path = str(metrics.get("path") or "/metrics")
        if path != "/metrics":
            labels["__metrics_path__"] = path
        targets.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
    return [{"job_name": job_name, "static_configs": targets}] if targets else []


class FilterModule:
    """Filters of the accessories role."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "accessories_problems": accessories_problems,
            "accessories_scrape_configs": accessories_scrape_configs,
        }
