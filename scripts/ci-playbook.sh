#!/usr/bin/env bash
# Run a playbook (any command) with its output on stdout and in a log, and
# pass a cancel on to it:
#   exec scripts/ci-playbook.sh <log> ansible-playbook ...
# GitHub cancels a step by sending SIGINT to the step's shell, SIGTERM 7.5 s
# later, and kills the process tree 2.5 s after that. In a plain
# `ansible-playbook ... | tee log` the shell gets the signal, the playbook does
# not, and it may go on switching traffic while the step's clean-up (rollback,
# abort) races it. `exec` makes this script the step's shell: it forwards the
# first signal to the playbook as SIGINT (Ansible stops after the task in
# hand), a second as SIGTERM, and waits for the playbook, so the steps that run
# after a cancel find it ended. It exits with the playbook's status.
set -uo pipefail
log="${1:?usage: ci-playbook.sh <log> <command> [args...]}"
shift
[ "$#" -gt 0 ] || { echo "usage: ci-playbook.sh <log> <command> [args...]" >&2; exit 2; }

name="${1##*/}"
: >"$log"
# Job control: a background job of a script ignores SIGINT otherwise (and Python
# then never installs its handler); it also gets a process group of its own, so
# only what this script forwards reaches it.
set -m
"$@" >>"$log" 2>&1 &
child=$!
# Stream the log as it grows; tail ends by itself once the playbook has ended.
tail -n +1 -f --pid="$child" "$log" &
tailer=$!
set +m  # no job notices in the log

signals=0
# shellcheck disable=SC2317  # called by the trap below
forward() {
  signals=$((signals + 1))
  if [ "$signals" -eq 1 ]; then
    echo "ci-playbook: cancelled: asking $name (pid $child) to stop (SIGINT) and waiting for it" >&2
    kill -INT "$child" 2>/dev/null || true
  else
    echo "ci-playbook: cancelled again: SIGTERM to $name (pid $child)" >&2
    kill -TERM "$child" 2>/dev/null || true
  fi
}
trap forward INT TERM

status=0
while :; do
  if wait "$child"; then status=0; else status=$?; fi
  # A trapped signal interrupts `wait` (status > 128) while the playbook runs on.
  kill -0 "$child" 2>/dev/null || break
done
wait "$tailer" 2>/dev/null || true
exit "$status"
