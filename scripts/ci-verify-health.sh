#!/usr/bin/env bash
# Poll <url>/health until it reports <version> three times in a row, or give up.
#   scripts/ci-verify-health.sh <public url> <expected version>
# Tunables: VERIFY_ATTEMPTS (default 40), VERIFY_INTERVAL_S (default 3).
# Asks pinned to the canary (X-Archibald-Canary: always): during a canary that
# paused, the version just released answers only its share of clients; outside
# a canary nginx ignores the header.
# Prints color=<colour> and version=<version> of the last answer (for
# $GITHUB_OUTPUT); exits 1 when the version never showed up.
set -euo pipefail
url="${1:?usage: ci-verify-health.sh <public url> <expected version>}"
expected="${2:?usage: ci-verify-health.sh <public url> <expected version>}"
attempts="${VERIFY_ATTEMPTS:-40}"
interval="${VERIFY_INTERVAL_S:-3}"
health="${url%/}/health"

streak=0
color=""
version=""
for attempt in $(seq 1 "$attempts"); do
  if answer=$(curl -fsS --max-time 5 -H "X-Archibald-Canary: always" "$health" 2>&1); then
    parsed=$(printf '%s' "$answer" | python3 -c '
import json, sys
try:
    data = json.load(sys.stdin)
except ValueError:
    data = {}
print(data.get("status", ""), data.get("color", ""), data.get("version", ""))
')
    read -r status color version <<<"$parsed"
    if [ "$status" = ok ] && [ "$version" = "$expected" ]; then
      streak=$((streak + 1))
    else
      streak=0
    fi
    echo "attempt $attempt/$attempts: status=${status:-?} color=${color:-?} version=${version:-?}" >&2
  else
    streak=0
    echo "attempt $attempt/$attempts: $answer" >&2
  fi
  if [ "$streak" -ge 3 ]; then
    echo "color=$color"
    echo "version=$version"
    exit 0
  fi
  sleep "$interval"
done
echo "color=$color"
echo "version=$version"
echo "::error::$health did not report version $expected within $attempts attempts (last: ${version:-no answer})." >&2
exit 1
