#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bluegreen_switch
short_description: point nginx at one colour under the fenced release lock
description:
  - Writes nginx's upstream file for one colour, tests the whole configuration and reloads nginx
    gracefully, in one step. The file never stays written without the reload that loads it; a
    reload by anyone else (for example certbot's hook) would otherwise move traffic to a colour
    that was never verified.
  - Holds the app directory's flock and checks that O(token) still holds the release lock before
    it writes anything.
  - When the test fails, the previous file is put back and nginx is not reloaded, so traffic keeps
    flowing where it went; the module fails with nginx's own message.
  - The file's first line names the colour, version and digest it points at; the
    C(bluegreen_facts) module reads it to find drift.
options:
  dir:
    description: The app's directory (holds the release lock).
    type: path
    required: true
  token:
    description: The release lock's token.
    type: str
    required: true
    no_log: false
  upstreams_file:
    description: The file nginx includes.
    type: path
    required: true
  content:
    description: The upstream blocks for O(color) (the marker line is added by the module).
    type: str
    required: true
  color:
    description: The colour the file points at.
    type: str
    required: true
  version:
    description: The version that colour runs.
    type: str
    required: true
  digest:
    description: The image digest that colour runs.
    type: str
  canary:
    description: The canary the file sends a share to (C(color), C(version), C(weight)), named
      in the marker line; omitted when O(color) serves everyone.
    type: dict
  reload:
    description: Reload even when the file is already as wanted (a repair after an interrupted
      switch, where the file was written but never loaded).
    type: bool
    default: false
  test_command:
    description: Command that tests the whole configuration.
    type: list
    elements: str
    default: [nginx, -t]
  reload_command:
    description: Command that reloads nginx gracefully.
    type: list
    elements: str
    default: [systemctl, reload, nginx]
  blocks:
    description:
      - After the switch, each colour's upstream blocks as a switch to it without a canary writes
        them (colour to text), written to C(upstreams-<colour>.conf) in O(dir), root only (0600),
        when their text changed. The host's watchdog switches nginx to the warm colour by copying
        one in place; writing them here keeps them equal to what the release just loaded.
    type: dict
  lease:
    description: Renew the release lock's lease for this many seconds from now before writing
      (every write is a heartbeat of the run that holds the lock); 0 leaves it as it is.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description: Reports whether the file would change; nothing is written or reloaded.
  diff_mode:
    support: full
    description: The file before and after.
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Switch nginx to green
  bluegreen_switch:
    dir: /var/lib/archibald/archibald
    token: "{{ release_lock.token }}"
    upstreams_file: /etc/nginx/archibald/upstreams.conf
    content: "{{ lookup('ansible.builtin.template', 'upstreams.conf.j2') }}"
    color: green
    version: v2
"""

RETURN = r"""
blocks:
  description: The colours whose upstream blocks for the watchdog were written (O(blocks)).
  returned: when O(blocks) is given
  type: list
  elements: str
reloaded:
  description: Whether nginx was reloaded.
  returned: always
  type: bool
"""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen import (
    BlueGreenError,
    Runner,
    check_colors,
    normalise_canary,
    read_text,
    switch_upstreams,
    upstream_text,
    watchdog_blocks_path,
    write_durably,
)


def run(
    params: Mapping[str, Any],
    now: Callable[[], datetime],
    command: Runner,
    check_mode: bool,
    move: Callable[[str, str], None],
) -> dict[str, Any]:
    wanted = upstream_text(
        params["color"],
        params["version"],
        params.get("digest"),
        params["content"],
        normalise_canary(params.get("canary")),
    )
    result = switch_upstreams(
        params["dir"],
        params["token"],
        params["upstreams_file"],
        wanted,
        color=params["color"],
        version=params["version"],
        now=now,
        command=command,
        test_command=params["test_command"],
        reload_command=params["reload_command"],
        reload=params["reload"],
        check_mode=check_mode,
        lease_s=params.get("lease"),
        move=move,
    )
    blocks = params.get("blocks")
    if blocks is not None:
        result["blocks"] = write_blocks(params["dir"], blocks, check_mode, move)
        result["changed"] = result["changed"] or bool(result["blocks"])
    return result


def write_blocks(
    directory: str, blocks: Mapping[str, Any], check_mode: bool, move: Callable[[str, str], None]
) -> list[str]:
    """Write each colour's blocks whose text changed; the colours written, in order."""
    check_colors(list(blocks))
    written = []
    for color, text in sorted(blocks.items()):
        path = watchdog_blocks_path(directory, color)
        if read_text(path) != str(text):
            written.append(color)
            if not check_mode:
                write_durably(path, str(text), mode=0o600, move=move)
    return written


ARGUMENT_SPEC: dict[str, Any] = {
    "dir": {"type": "path", "required": True},
    "token": {"type": "str", "required": True, "no_log": False},
    "upstreams_file": {"type": "path", "required": True},
    "content": {"type": "str", "required": True},
    "color": {"type": "str", "required": True},
    "version": {"type": "str", "required": True},
    "digest": {"type": "str"},
    "canary": {"type": "dict"},
    "reload": {"type": "bool", "default": False},
    "test_command": {"type": "list", "elements": "str", "default": ["nginx", "-t"]},
    "reload_command": {
        "type": "list",
        "elements": "str",
        "default": ["systemctl", "reload", "nginx"],
    },
    "lease": {"type": "int", "default": 0},
    "blocks": {"type": "dict"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)

    def command(argv: list[str]) -> tuple[int, str, str]:
        rc, out, err = module.run_command(argv)
        return rc, out, err

    def move(src: str, dest: str) -> None:
        module.atomic_move(src, dest)

    try:
        result = run(module.params, lambda: datetime.now(UTC), command, module.check_mode, move)
    except BlueGreenError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"cannot write {module.params['upstreams_file']}: {exc}")
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
