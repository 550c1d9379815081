#!/usr/bin/env bash
# After a deploy or promote job of $VERSION failed or was cancelled: send
# everyone back to the version that served before, then check it through the
# public URL. The caller's `if:` decides which of the two applies (never both:
# a canary in progress is not the active version).
#   scripts/ci-undo.sh rollback <version before>  traffic moved to $VERSION: rollback.yml
#   scripts/ci-undo.sh abort <version before>     a canary of $VERSION is in progress:
#                                                 abort.yml (it marks $VERSION bad)
# Env: VERSION, INVENTORY, VAULT_PASSWORD_FILE, PUBLIC_URL; VERIFY_ATTEMPTS and
# VERIFY_INTERVAL_S for the check (keep it short: after a cancel GitHub kills
# the job 5 minutes on). Writes rollback.log or abort.log for the job summary.
set -euo pipefail
cd "$(dirname "$0")/.."
# A cancel stops the job's playbook with SIGINT, and Ansible then runs no
# `always:` section: the release lock stays held by this run until its lease
# ends (bluegreen_lock_ttl_s, 5 min), past GitHub's window. The playbook has
# ended by now (scripts/ci-playbook.sh waits for it), so this run's lock is
# taken over; another run's is waited for as always.
own_lock=(-e bluegreen_lock_take_over_own_ci_run=true)
what="${1:?usage: ci-undo.sh rollback|abort <version before>}"
before="${2:-}"
: "${VERSION:?}" "${INVENTORY:?}" "${VAULT_PASSWORD_FILE:?}" "${PUBLIC_URL:?}"

case "$what" in
  rollback)
    echo "Traffic moved to $VERSION and the job failed: rolling back to ${before:-the other colour}."
    ansible-playbook playbooks/rollback.yml -i "$INVENTORY" "${own_lock[@]}" \
      --vault-password-file "$VAULT_PASSWORD_FILE" 2>&1 | tee rollback.log
    ;;
  abort)
    echo "The canary of $VERSION is still in progress after the failure: aborting it (${before:-the stable version} for all)."
    ansible-playbook playbooks/abort.yml -i "$INVENTORY" "${own_lock[@]}" \
      -e "bluegreen_abort_reason='the CD job of $VERSION failed or was cancelled'" \
      --vault-password-file "$VAULT_PASSWORD_FILE" 2>&1 | tee abort.log
    ;;
  *)
    echo "ci-undo.sh: unknown action '$what' (rollback or abort)" >&2
    exit 2
    ;;
esac
if [ -n "$before" ]; then
  scripts/ci-verify-health.sh "$PUBLIC_URL" "$before"
fi
