"""filter_plugins/openpgp.py: the primary-key fingerprints gpg reads in a key file,
never a subkey's. The grafana role installs its repository's key only when the
primary fingerprint is the pinned one (roles/grafana/tasks/key.yml)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from openpgp import openpgp_primary_fingerprints

# gpg --show-keys --with-colons of a key with a signing subkey (gnupg's doc/DETAILS).
TWO_KEYS = """\
pub:-:4096:1:963FA27710458545:1673000000:1767000000::-:::scSC::::::23::0:
fpr:::::::::B53AE77BADB630A683046005963FA27710458545:
uid:-::::1673000000::AAAA::Grafana Labs <engineering@grafana.com>::::::::::0:
sub:-:4096:1:1111111111111111:1673000000:1767000000:::::s::::::23:
fpr:::::::::0000000000000000000000001111111111111111:
pub:-:255:22:53A95E6F96E1DE0F:1796684413:::-:::scSC:::::ed25519:::0:
fpr:::::::::e0bd3bd8ee05efd66e00b80a53a95e6f96e1de0f:
"""


def test_each_keys_primary_fingerprint_and_no_subkeys() -> None:
    assert openpgp_primary_fingerprints(TWO_KEYS) == [
        "B53AE77BADB630A683046005963FA27710458545",
        "E0BD3BD8EE05EFD66E00B80A53A95E6F96E1DE0F",
    ]
    assert openpgp_primary_fingerprints("") == []
    assert openpgp_primary_fingerprints("gpg: no valid OpenPGP data found.\n") == []
    with pytest.raises(AnsibleFilterError, match="--with-colons"):
        openpgp_primary_fingerprints(None)  # type: ignore[arg-type]


def test_what_gpg_itself_prints_for_a_key_it_made(tmp_path: Path) -> None:
    assert shutil.which("gpg"), "gpg is missing: `scripts/system-packages.sh unit` installs it"
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    gpg = ["gpg", "--batch", "--quiet", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "Test <test@example.invalid>", "ed25519", "sign", "never"],
        env=env,
        check=True,
    )
    subprocess.run(
        [*gpg, "--quick-add-key", _fingerprint(env), "cv25519", "encr", "never"],
        env=env,
        check=True,
    )
    key = tmp_path / "key.asc"
    key.write_bytes(
        subprocess.run(
            [*gpg, "--armor", "--export", "test@example.invalid"],
            env=env,
            check=True,
            capture_output=True,
        ).stdout
    )
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    shown = subprocess.run(
        ["gpg", "--batch", "--show-keys", "--with-colons", str(key)],
        env=dict(os.environ, GNUPGHOME=str(empty)),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert shown.count("\nfpr:") + shown.startswith("fpr:") == 2, "a primary key and a subkey"
    assert openpgp_primary_fingerprints(shown) == [_fingerprint(env)]


def _fingerprint(env: dict[str, str]) -> str:
    listed = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", "test@example.invalid"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:"))
