"""Reach Molecule's hosts through their containers' namespaces while a playbook runs.

Molecule's inventory reaches each host with ``docker exec``
(community.docker.docker): for every task a docker CLI, a round trip through
dockerd and containerd, and a runc exec. This vars plugin gives each running
host the connection community.docker.nsenter (the same collection) with the PID
of the container's init instead: the same modules run in the same host, with
the same files, processes and network, at about a third of the CPU (README,
"Ansible's speed", has the figures).

Where Mitogen's strategy runs the play (ANSIBLE_STRATEGY=mitogen_linear, set
beside this plugin in Molecule's configuration), the host gets the short
connection name ``docker`` instead, which that strategy takes over: one
``docker exec`` and one Python interpreter per host for the whole run, the
modules and their imports cached there. 41 tasks on one host cost 22.3 s of
CPU through nsenter, 36 s through plain ``docker exec`` and 5.4 s through
Mitogen (controller and host together; README, "Ansible's speed").

It is on only where Molecule's configuration names its directory
(ANSIBLE_VARS_PLUGINS in .config/molecule/config.yml), so converge,
idempotence and every playbook a test runs go this way, never a production
run. It answers at task time only (``stage: task``): ``ansible-inventory``,
which testinfra reads, still sees ``docker exec``, the connection testinfra
understands. The PID is read for every task, so a host restarted in the
middle of a play is reached at its new init. Not root, a host that is not
running, or ARCHIBALD_TEST_CONNECTION=docker: Molecule's connection stays;
ARCHIBALD_TEST_CONNECTION=nsenter keeps nsenter under Mitogen's strategy (which
then runs Ansible's own way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ansible.plugins.vars import BaseVarsPlugin

DOCUMENTATION = """
    name: nsenter_hosts
    short_description: Molecule's docker hosts reached through nsenter at task time
    description:
      - Gives each running Molecule docker host community.docker.nsenter and its init's PID.
    options:
      stage:
        description: Only while tasks run; ansible-inventory keeps Molecule's connection.
        default: task
        choices: [task]
"""

CONNECTION_ENV = "ARCHIBALD_TEST_CONNECTION"
# What ANSIBLE_VARS_PLUGINS names to turn this plugin on (Molecule's configuration).
PLUGIN_DIR = str(Path(__file__).resolve().parent)
DOCKER = "community.docker.docker"
NSENTER = "community.docker.nsenter"
# The name Mitogen's strategies replace with their own docker connection (the
# fully qualified name is not replaced).
MITOGEN_DOCKER = "docker"
STRATEGY_ENV = "ANSIBLE_STRATEGY"

_client: Any = None


def container_pid(name: str) -> int:
    """The host PID of container `name`'s init; 0 when it is not running or unknown.
    One API call over Docker's socket (no CLI process)."""
    global _client
    import docker  # the Docker SDK, in requirements.txt
    from docker.errors import DockerException

    try:
        if _client is None:
            # DOCKER_HOST and its TLS settings, as the docker CLI reads them.
            _client = docker.APIClient(timeout=10, **docker.utils.kwargs_from_env())
        state = _client.inspect_container(name).get("State") or {}
    except DockerException:
        return 0
    return int(state.get("Pid") or 0) if state.get("Running") else 0


def wanted() -> bool:
    """nsenter needs root, and ARCHIBALD_TEST_CONNECTION=docker asks for docker exec."""
    return os.geteuid() == 0 and os.environ.get(CONNECTION_ENV, "nsenter") != "docker"


def mitogen() -> bool:
    """Whether this run's strategy is Mitogen's (Molecule's configuration sets it) and
    ARCHIBALD_TEST_CONNECTION does not ask for nsenter (or docker exec) instead."""
    return os.environ.get(STRATEGY_ENV, "").startswith("mitogen_") and os.environ.get(
        CONNECTION_ENV, "mitogen"
    ) not in ("nsenter", "docker")


def override(name: str, hostvars: dict[str, Any]) -> dict[str, Any]:
    """The connection variables for a host with inventory variables `hostvars`."""
    if not wanted():
        return {}
    if hostvars.get("ansible_connection") != DOCKER:
        return {}
    if mitogen():
        return {"ansible_connection": MITOGEN_DOCKER}
    pid = container_pid(str(hostvars.get("ansible_host") or name))
    if pid <= 0:
        return {}
    return {"ansible_connection": NSENTER, "ansible_nsenter_pid": pid}


class VarsModule(BaseVarsPlugin):  # type: ignore[misc]
    def get_vars(self, loader: Any, path: str, entities: Any, cache: bool = True) -> dict[str, Any]:
        super().get_vars(loader, path, entities)
        if not isinstance(entities, list):
            entities = [entities]
        found: dict[str, Any] = {}
        for entity in entities:
            if hasattr(entity, "get_groups"):  # a Host, not a Group
                found.update(override(entity.name, dict(entity.vars)))
        return found
