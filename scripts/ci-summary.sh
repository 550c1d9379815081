#!/usr/bin/env bash
# Append an ansible-playbook run to the job summary:
#   scripts/ci-summary.sh <title> <log file> [exit status]
# Writes the headline messages (what the release or rollback did), the PLAY
# RECAP and the whole log (folded, at most SUMMARY_MAX_BYTES) as Markdown to
# $GITHUB_STEP_SUMMARY, or to stdout outside GitHub Actions.
set -euo pipefail
title="${1:?usage: ci-summary.sh <title> <log file> [exit status]}"
log="${2:?usage: ci-summary.sh <title> <log file> [exit status]}"
status="${3:-0}"
max_bytes="${SUMMARY_MAX_BYTES:-200000}"
out="${GITHUB_STEP_SUMMARY:-/dev/stdout}"

if [ "$status" = 0 ]; then verdict="succeeded"; else verdict="failed (exit $status)"; fi

# Logs are shown in ~~~ fences; a ~~~ inside a log must not close them.
fence() { sed 's/~~~/~~ ~/g'; }

{
  echo "## $title: $verdict"
  echo
  if [ -f "$log" ]; then
    headlines=$(grep -Eo '(Release [^ ]+ to [a-z]+;.*|Version [^ ]+ already serves traffic.*|Roll back from .*|Traffic is on .*|Active colour: .*|fatal: .*|msg: .*)' "$log" \
      | sed 's/^msg: //' | sort -u | head -n 20 || true)
    if [ -n "$headlines" ]; then
      printf '%s\n' "$headlines" | sed 's/^/- /' | fence
      echo
    fi
    echo '~~~'
    sed -n '/^PLAY RECAP/,/^$/p' "$log" | fence
    echo '~~~'
    echo
    echo "<details><summary>Full output</summary>"
    echo
    echo '~~~'
    tail -c "$max_bytes" "$log" | fence
    echo '~~~'
    echo
    echo "</details>"
  else
    echo "No output was recorded ($log is missing)."
  fi
  echo
} >>"$out"
