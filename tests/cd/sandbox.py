"""The CD test's own sandbox host and the inventory CD reaches it with.

A second sandbox beside `make deploy`'s (own container, volume, ports and key
directory), made by the same playbooks/sandbox.yml; CD's own deploy.yml run
provisions it. Its inventory looks like inventory/production: a host, a user,
become, an encrypted vault.yml; the SSH key and the pinned host key come from
the CD job's secrets (scripts/ci-access.sh), not from the inventory.

    python tests/cd/sandbox.py {up,down}      (up also deploys v1)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from harness import playbook, testbed

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".cache" / "cdtest"
NAME = "cdtest-sandbox"
SSH_PORT = 2322
HTTPS_PORT = 8543
HTTP_PORT = 8580
PUBLIC_URL = f"https://localhost:{HTTPS_PORT}"
VAULT_PASSWORD = "cdtest-vault-password"
CERT_ON_HOST = "/etc/ssl/archibald/localhost.crt"
INVENTORY = WORK / "inventory"
# Offline on purpose, on every network: Grafana's repository never resolves
# here, so the sandbox leaves Grafana out the same way on GitHub and here.
UNREACHABLE_GRAFANA = "https://grafana-repository.invalid"


def run(cmd: list[str]) -> None:
    """Run an Ansible command; its output goes to .cache/cdtest/sandbox.log."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "sandbox.log"
    with path.open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        began = log.tell()
        result = subprocess.run(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=playbook.env(),
            check=False,
        )
    if result.returncode != 0:
        with path.open(errors="replace") as log:
            log.seek(began)
            why = playbook.failed_tasks(log.read())
        raise RuntimeError(
            f"{cmd[0]} {cmd[1]} failed ({result.returncode}); what failed:\n{why}\n"
            f"(the whole output: {path})"
        )


def sandbox_vars() -> list[str]:
    return [
        "-e",
        f"sandbox_name={NAME}",
        "-e",
        f"sandbox_dir={WORK / 'keys'}",
        "-e",
        f"sandbox_ssh_port={SSH_PORT}",
        "-e",
        yaml.safe_dump(
            {
                "sandbox_ports": [
                    f"127.0.0.1:{SSH_PORT}:22",
                    f"127.0.0.1:{HTTP_PORT}:80",
                    f"127.0.0.1:{HTTPS_PORT}:443",
                ]
            },
            default_flow_style=True,
        ).strip(),
    ]


def ssh_args() -> list[str]:
    """Reach the sandbox as `make deploy` does (before CD's own SSH set-up exists)."""
    keys = WORK / "keys"
    password = WORK / "vault-password"
    WORK.mkdir(parents=True, exist_ok=True)  # a fresh clone has no .cache yet
    password.write_text(VAULT_PASSWORD + "\n")
    return [
        "-i",
        str(INVENTORY),
        "--vault-password-file",
        str(password),
        "--private-key",
        str(keys / "id_ed25519"),
        "--ssh-common-args",
        f"-o UserKnownHostsFile={keys / 'known_hosts'} -o StrictHostKeyChecking=yes",
    ]


def digest(version: str) -> str:
    """The digest the harness's registry holds for app image `version` (scripts/image-digest.py)."""
    ref = f"{testbed.PUSH_REGISTRY}/{testbed.APP_REPOSITORY}:{version}"
    out = subprocess.run(
        ["python3", str(ROOT / "scripts/image-digest.py"), ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not out.startswith("digest=sha256:"):
        raise RuntimeError(f"image-digest.py gave {out!r} for {ref}")
    return out.removeprefix("digest=")


def write_hosts() -> None:
    INVENTORY.mkdir(parents=True, exist_ok=True)
    (INVENTORY / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "archibald": {
                            "hosts": {
                                "cdtest": {
                                    "ansible_host": "127.0.0.1",
                                    "ansible_port": SSH_PORT,
                                    "ansible_user": "deploy",
                                    "ansible_become": True,
                                }
                            }
                        }
                    }
                }
            }
        )
    )


# A case's canary steps come from the runner's environment (CANARY_ENV, JSON),
# through a file whose text never changes: deploy.yml provisions a host again
# when any inventory file changed (playbooks/provision.yml), and steps written
# into the inventory per case made two cases provision the host again (747 s
# of the canary case's 850 in a CI run); the steps are read by the release only.
CANARY_ENV = "CDTEST_CANARY_STEPS"
CANARY_VARS = (
    "# Written by tests/cd/sandbox.py: the canary steps of the case that runs.\n"
    f"bluegreen_canary_steps: \"{{{{ lookup('ansible.builtin.env', '{CANARY_ENV}', "
    "default='[]') | from_json }}\"\n"
)


def observer_key() -> Path:
    """The observer's key pair (VPS_OBSERVER_KEY's stand-in), made once."""
    key = WORK / "keys" / "observer"
    if not key.is_file():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "cdtest-observer",
                "-f",
                str(key),
            ],
            check=True,
        )
    return key


def write_group_vars() -> Path:
    """Group variables like inventory/production's: settings, shared defaults, a vault."""
    group_vars = INVENTORY / "group_vars" / "all"
    group_vars.mkdir(parents=True, exist_ok=True)
    shared = group_vars / "00-shared.yml"
    if not shared.is_symlink():
        shared.symlink_to(ROOT / "group_vars" / "all.yml")
    settings = yaml.safe_load((ROOT / "inventory/sandbox/group_vars/all/main.yml").read_text())
    settings.update(
        {
            "base_deploy_authorized_keys": [(WORK / "keys" / "id_ed25519.pub").read_text().strip()],
            # The plan job's read-only key (roles/bluegreen/tasks/observer.yml).
            "bluegreen_observer_authorized_keys": [
                observer_key().with_suffix(".pub").read_text().strip()
            ],
            "public_url": PUBLIC_URL,
            "grafana_apt_repo_url": UNREACHABLE_GRAFANA,
            "grafana_apt_key_url": f"{UNREACHABLE_GRAFANA}/gpg.key",
            "grafana_repo_check_timeout": 3,
            "grafana_admin_password": "{{ vault_cdtest_grafana_admin_password }}",
            # The CD job verifies through the public URL itself; the metric
            # analysis has its own tests in the whole-stack scenario.
            "bluegreen_analysis_window_s": 0,
            # A gate that can never pass gives up after 20 s, not 60.
            "bluegreen_health_timeout_s": 20,
            # No traffic reaches the sandbox but the job's own checks: a canary
            # step has no decision by its analysis_s and would wait 180 s for one
            # (each step of the canary cases did, 3 min each in a run);
            # allow_no_data (the sandbox's settings) then lets it pass.
            "bluegreen_canary_max_wait_s": 10,
        }
    )
    (group_vars / "main.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (group_vars / "canary.yml").write_text(CANARY_VARS)
    vault = group_vars / "vault.yml"
    if not vault.is_file() or not vault.read_text().startswith("$ANSIBLE_VAULT;"):
        vault.write_text("vault_cdtest_grafana_admin_password: cdtest-grafana-admin\n")
        password = WORK / "vault-password"
        password.write_text(VAULT_PASSWORD + "\n")
        run(["ansible-vault", "encrypt", "--vault-password-file", str(password), str(vault)])
    return INVENTORY


def host_cert() -> Path:
    """The sandbox's self-signed certificate, for curl; empty until nginx has one."""
    cert = WORK / "public-ca.pem"
    out = subprocess.run(
        ["docker", "exec", NAME, "cat", CERT_ON_HOST],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    cert.write_text(out)
    return cert


def up(version: str | None = None) -> float:
    """Create the sandbox (and deploy `version` with deploy.yml); return the seconds it took."""
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    write_hosts()
    run(["ansible-playbook", "playbooks/sandbox.yml", *sandbox_vars(), *ssh_args()])
    write_group_vars()
    if version is not None:
        run(["ansible-playbook", "deploy.yml", *ssh_args(), "-e", f"app_version={version}"])
    return time.monotonic() - started


def down() -> None:
    run(
        [
            "ansible-playbook",
            "playbooks/sandbox.yml",
            *sandbox_vars(),
            "-e",
            "sandbox_state=absent",
            *ssh_args(),
        ]
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["up"]:
        print(f"cdtest sandbox up in {up('v1'):.0f} s")
    elif sys.argv[1:] == ["down"]:
        down()
    else:
        sys.exit(__doc__)
