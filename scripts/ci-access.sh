#!/usr/bin/env bash
# Give a CI job SSH access to the production host.
#   scripts/ci-access.sh              the deploy user's key and the vault password
#   scripts/ci-access.sh --observer   the read-only observer's key only (the plan job)
# The deploy mode needs VPS_SSH_KEY (private key of the deploy user),
# VPS_KNOWN_HOSTS (the host's pinned known_hosts line) and ANSIBLE_VAULT_PASSWORD;
# the observer mode VPS_OBSERVER_KEY (the key of bluegreen_observer_authorized_keys,
# which can only print the host's facts) and VPS_KNOWN_HOSTS. INVENTORY names the
# inventory (default inventory/production). Host keys are always checked: an
# unknown or changed host key stops the job. Everything is written under
# $RUNNER_TEMP (removed with the runner's temp) and handed to ssh with -F, so
# it does not depend on which home directory ssh would read.
# Exports for later steps (via $GITHUB_ENV): deploy mode ANSIBLE_PRIVATE_KEY_FILE,
# ANSIBLE_SSH_COMMON_ARGS, VAULT_PASSWORD_FILE (pass it with --vault-password-file);
# observer mode CD_SSH_CONFIG (scripts/cd-plan.py reads it).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { printf '::error::%s\n' "$*"; exit 1; }

mode=deploy
case "${1:-}" in
  "") ;;
  --observer) mode=observer ;;
  *) fail "usage: scripts/ci-access.sh [--observer]" ;;
esac

if [ "$mode" = observer ]; then
  [ -n "${VPS_OBSERVER_KEY:-}" ] || fail "The VPS_OBSERVER_KEY secret is empty: add the private key whose public half is in bluegreen_observer_authorized_keys (OPERATIONS.md, 'Secrets and variables')."
  key_secret="$VPS_OBSERVER_KEY"
  key_name=VPS_OBSERVER_KEY
else
  [ -n "${VPS_SSH_KEY:-}" ] || fail "The VPS_SSH_KEY secret is empty: add the deploy user's private key (OPERATIONS.md, 'Secrets and variables')."
  key_secret="$VPS_SSH_KEY"
  key_name=VPS_SSH_KEY
fi
[ -n "${VPS_KNOWN_HOSTS:-}" ] || fail "The VPS_KNOWN_HOSTS secret is empty: add the host's known_hosts line from ssh-keyscan, checked against the provider's console (OPERATIONS.md)."
inventory="${INVENTORY:-inventory/production}"
vault="$inventory/group_vars/all/vault.yml"
if [ "$mode" = deploy ]; then
  [ -n "${ANSIBLE_VAULT_PASSWORD:-}" ] || fail "The ANSIBLE_VAULT_PASSWORD secret is empty: add the password of $vault."

  [ -f "$vault" ] || fail "$vault is missing: copy vault.yml.example, fill it in, ansible-vault encrypt it and commit it."
  IFS= read -r first_line <"$vault" || true
  case "$first_line" in
    "\$ANSIBLE_VAULT;"*) ;;
    *) fail "$vault is not encrypted: run ansible-vault encrypt $vault before committing it." ;;
  esac
fi

umask 077
ssh_dir="${RUNNER_TEMP:-/tmp}/archibald-ssh"
mkdir -p "$ssh_dir"
key="$ssh_dir/archibald_$mode"
printf '%s\n' "$key_secret" | tr -d '\r' >"$key"
ssh-keygen -y -f "$key" >/dev/null 2>&1 \
  || fail "$key_name is not a usable private key (passphrase-less OpenSSH key expected)."

printf '%s\n' "$VPS_KNOWN_HOSTS" | tr -d '\r' >"$ssh_dir/known_hosts"
ssh-keygen -l -f "$ssh_dir/known_hosts" >/dev/null 2>&1 \
  || fail "VPS_KNOWN_HOSTS is not a known_hosts line ('<host> <key type> <key>')."
echo "Pinned host keys:"
ssh-keygen -l -f "$ssh_dir/known_hosts"

# Strict host key checking for every connection this job makes.
cat >"$ssh_dir/config" <<CONFIG
Host *
  StrictHostKeyChecking yes
  UserKnownHostsFile $ssh_dir/known_hosts
  IdentityFile $key
  IdentitiesOnly yes
CONFIG

chmod 0600 "$key" "$ssh_dir/known_hosts" "$ssh_dir/config"

if [ "$mode" = observer ]; then
  if [ -n "${GITHUB_ENV:-}" ]; then
    echo "CD_SSH_CONFIG=$ssh_dir/config" >>"$GITHUB_ENV"
  fi
  echo "The observer's SSH key and the pinned host key are in place (no vault password)."
  exit 0
fi

vault_pass="${RUNNER_TEMP:-/tmp}/vault-password"
printf '%s\n' "$ANSIBLE_VAULT_PASSWORD" >"$vault_pass"
chmod 0600 "$vault_pass"

if [ -n "${GITHUB_ENV:-}" ]; then
  {
    echo "ANSIBLE_PRIVATE_KEY_FILE=$key"
    echo "ANSIBLE_SSH_COMMON_ARGS=-F $ssh_dir/config"
    echo "VAULT_PASSWORD_FILE=$vault_pass"
  } >>"$GITHUB_ENV"
fi
echo "SSH key, pinned host key and vault password file are in place."
