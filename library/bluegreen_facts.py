#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bluegreen_facts
short_description: observe a blue/green host, report drift and plan a release, rollback or repair
description:
  - Reads what the host really has, and changes nothing. The record (C(state.json)), the release
    lock, the retirement deadlines and the upstream file from the app's directory and nginx's
    configuration; the colour and version nginx answers with on the health path (through the
    edge, as a user reaches it); and the containers of each colour, listed from the Docker
    engine's socket (O(docker_socket)) or passed in O(containers).
  - Reports drift in words, where these disagree (for example nginx serving a colour that the
    record does not name as active, an upstream file that nginx has not loaded, containers
    running while the record is empty, a version or image that differs from the record).
  - Plans what O(request) asks for from those facts, with one vocabulary for a release, a
    rollback and a repair (RV(plan)). On drift a release or rollback is planned as C(refuse), with
    the repair to run.
  - The planning, the drift rules and the file formats live in C(module_utils/bluegreen.py), the
    one owner of the host's record.
options:
  dir:
    description: The app's directory holding C(state.json), C(release.lock) and the deadlines.
    type: path
    required: true
  app:
    description: Application name.
    type: str
    required: true
  colors:
    description: The two colour names.
    type: list
    elements: str
    default: [blue, green]
  services:
    description: The services every colour runs.
    type: list
    elements: str
    required: true
  upstreams_file:
    description: The upstream file that nginx includes and a switch rewrites.
    type: path
    required: true
  edge_url:
    description: Base URL of the edge (nginx), for example V(https://127.0.0.1).
    type: str
    required: true
  edge_host:
    description: Host header sent to the edge.
    type: str
  edge_validate_certs:
    description: Verify the edge's TLS certificate.
    type: bool
    default: true
  health_path:
    description: Path that answers JSON with C(color) and C(version).
    type: str
    default: /health
  request_timeout:
    description: Seconds the edge may take to answer.
    type: float
    default: 5
  containers:
    description:
      - The app's containers, as the container list of C(docker_host_info) with
        C(verbose_output) gives them, or as C(docker inspect) documents.
      - When omitted, the module lists the containers labelled with O(app) itself, through
        O(docker_socket) (one request, read-only).
    type: list
    elements: dict
  docker_socket:
    description: The Docker engine's socket the containers are listed from (without
      O(containers)).
    type: path
    default: /var/run/docker.sock
  request:
    description:
      - What to plan. C(action) is V(release), V(rollback), V(repair) or V(none); a release names
        C(version) and may name C(digest), C(image_id) (of the pulled image) and C(config) (the
        hash of the wanted container configuration); C(force) allows a version marked bad.
    type: dict
    default: {action: none}
attributes:
  check_mode:
    support: full
    description: Reads only; the same in check mode.
  diff_mode:
    support: none
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Observe the host and plan the release
  bluegreen_facts:
    dir: /var/lib/archibald/archibald
    app: archibald
    services: [backend, frontend]
    upstreams_file: /etc/nginx/archibald/upstreams.conf
    edge_url: https://127.0.0.1
    edge_host: formicanera.com
    request:
      action: release
      version: "{{ app_version }}"
  register: bluegreen_facts
"""

RETURN = r"""
state:
  description: The record, completed to the current schema (empty when there is none).
  returned: always
  type: dict
state_exists:
  description: Whether C(state.json) exists and is not empty.
  returned: always
  type: bool
lock:
  description: The release lock's content (null when free), with C(expired).
  returned: always
  type: dict
upstream:
  description: What the upstream file says it points at (null when no release wrote it).
  returned: always
  type: dict
edge:
  description: nginx's answer on the health path, C(status), C(color), C(version), C(error).
  returned: always
  type: dict
colors:
  description: Per colour, its containers by service and whether they all run.
  returned: always
  type: dict
retire:
  description: Per colour, the retirement deadline (epoch seconds) or null.
  returned: always
  type: dict
drift:
  description: Every disagreement found, as sentences; empty when the host matches its record.
  returned: always
  type: list
  elements: str
plan:
  description: What to do, C(kind) (release, rollback, repair, promote, abort, noop, refuse),
    C(why), C(from_color), C(from_version), C(to_color), C(to_version), C(to_digest),
    C(to_image_id); for promote and abort C(canary), the canary in progress; for a rollback
    C(warm), whether the colour to go back to runs what its record says (nothing to start).
  returned: always
  type: dict
"""

from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen import BlueGreenError, docker_listed
from ansible.module_utils.bluegreen import observe as observe_host
from ansible.module_utils.httpfetch import fetch


def observe(params: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Everything the module returns (bluegreen.observe), nginx asked through Ansible's client
    and, without ``containers``, the app's containers listed through Docker's socket."""
    if params.get("containers") is None:
        socket_path = params["docker_socket"]
        try:
            listed = docker_listed(socket_path, params["app"], params["request_timeout"])
        except OSError as exc:
            raise BlueGreenError(
                f"cannot list the containers of {params['app']} through Docker's socket "
                f"{socket_path}: {exc}. Nothing was changed; check `systemctl status docker` on "
                f"the host and rerun"
            ) from exc
        params = {**params, "containers": listed}
    return observe_host(params, now, fetch)


ARGUMENT_SPEC: dict[str, Any] = {
    "dir": {"type": "path", "required": True},
    "app": {"type": "str", "required": True},
    "colors": {"type": "list", "elements": "str", "default": ["blue", "green"]},
    "services": {"type": "list", "elements": "str", "required": True},
    "upstreams_file": {"type": "path", "required": True},
    "edge_url": {"type": "str", "required": True},
    "edge_host": {"type": "str"},
    "edge_validate_certs": {"type": "bool", "default": True},
    "health_path": {"type": "str", "default": "/health"},
    "request_timeout": {"type": "float", "default": 5},
    "containers": {"type": "list", "elements": "dict"},
    "docker_socket": {"type": "path", "default": "/var/run/docker.sock"},
    "request": {"type": "dict", "default": {"action": "none"}},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = observe(module.params, datetime.now(UTC))
    except BlueGreenError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
