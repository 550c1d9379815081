#!/usr/bin/env bash
# Print what serves traffic on the host, read from its blue/green state file:
#   scripts/ci-host-state.sh <inventory>
# Output (key=value lines, ready for $GITHUB_OUTPUT):
#   active=<colour>  active_version=<version>  other=<colour>  other_version=<version>
#   canary_version=<version>  canary_weight=<percent>  canary_paused=<true|false>
# Values are empty before the first release, and the canary's when none is in
# progress (canary_paused=false). Read-only; needs SSH access.
set -euo pipefail
cd "$(dirname "$0")/.."
inventory="${1:?usage: ci-host-state.sh <inventory>}"

vault_args=()
if [ -n "${VAULT_PASSWORD_FILE:-}" ]; then
  vault_args=(--vault-password-file "$VAULT_PASSWORD_FILE")
fi

# The json stdout callback gives one JSON document for the ad-hoc run (other
# callbacks, e.g. profile_tasks, may print lines around it).
raw=$(ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=ansible.builtin.json \
  ansible archibald -i "$inventory" "${vault_args[@]}" -b -m bluegreen_state \
  -a 'dir={{ bluegreen_state_dir | default("/var/lib/archibald") }}/{{ bluegreen_app }} action=read')
printf '%s' "$raw" | python3 -c '
import json, sys
text = sys.stdin.read()
try:
    doc, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    result = next(iter(doc["plays"][0]["tasks"][0]["hosts"].values()))
except (ValueError, KeyError, IndexError, StopIteration) as exc:
    sys.exit(f"ci-host-state: no usable answer from the host ({exc!r})")
if result.get("failed") or result.get("unreachable"):
    sys.exit("ci-host-state: reading the state failed: " + str(result.get("msg", "")))
state = result.get("state") or {}
colors = state.get("colors") or {}
active = state.get("active") or ""
others = [c for c in colors if c != active]
other = others[0] if active and others else ""
for key, color in (("active", active), ("other", other)):
    version = (colors.get(color) or {}).get("version") or ""
    print(f"{key}={color}")
    print(f"{key}_version={version}")
canary = state.get("canary") or {}
print("canary_version=" + str(canary.get("version") or ""))
print("canary_weight=" + (str(canary.get("weight")) if canary else ""))
print("canary_paused=" + ("true" if canary.get("paused") else "false"))
'
