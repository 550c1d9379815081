#!/usr/bin/env bash
# Show or follow the logs of one colour's service, or of one shared service,
# on the host of an inventory (the first host of the group archibald).
#   scripts/logs.sh <inventory> [colour|active] [service]     e.g. ... active backend
#   scripts/logs.sh <inventory> --accessory <name>           e.g. ... --accessory redis
# LOG_LINES (default 100) lines first; FOLLOW=1 (the default) keeps following
# until Ctrl-C, over the same connection Ansible uses (ssh, or docker exec for
# a local test host); FOLLOW=0 prints and returns (through Ansible itself).
set -euo pipefail
cd "$(dirname "$0")/.."
inventory="${1:?usage: logs.sh <inventory> [colour|active] [service] | <inventory> --accessory <name>}"
lines="${LOG_LINES:-100}"
follow="${FOLLOW:-1}"
app=archibald

if [ "${2:-}" = --accessory ]; then
  container="$app-${3:?name the shared service, e.g. --accessory redis}"
else
  color="${2:-active}"
  service="${3:-backend}"
  if [ "$color" = active ]; then
    color=$(scripts/ci-host-state.sh "$inventory" | sed -n 's/^active=//p')
    [ -n "$color" ] || { echo "logs.sh: no release is recorded on the host yet: name a colour" >&2; exit 1; }
  fi
  container="$app-$service-$color"
fi
[[ "$container" =~ ^[a-z0-9-]+$ ]] || { echo "logs.sh: not a container name: $container" >&2; exit 2; }

if [ "$follow" != 1 ]; then
  exec ansible archibald -i "$inventory" -b -o -m ansible.builtin.command \
    -a "docker logs --tail $lines --timestamps $container"
fi

# Following streams: not something Ansible does, so use its connection directly.
host=$(ansible-inventory -i "$inventory" --graph archibald | sed -n 's/^ *|--//p' | head -n 1)
facts=$(ansible-inventory -i "$inventory" --host "$host")
field() { printf '%s' "$facts" | python3 -c "import json, sys; print(json.load(sys.stdin).get('$1') or '')"; }
connection=$(field ansible_connection)
address=$(field ansible_host)
echo "logs.sh: following $container on $host (Ctrl-C stops)" >&2
case "$connection" in
  community.docker.docker | docker)
    exec docker exec "${address:-$host}" docker logs --follow --tail "$lines" --timestamps "$container" ;;
  "" | ssh | ansible.builtin.ssh)
    port=$(field ansible_port)
    user=$(field ansible_user)
    exec ssh -t ${port:+-p "$port"} "${user:+$user@}${address:-$host}" \
      sudo docker logs --follow --tail "$lines" --timestamps "$container" ;;
  *)
    echo "logs.sh: cannot follow over the connection '$connection'; use FOLLOW=0" >&2
    exit 2 ;;
esac
