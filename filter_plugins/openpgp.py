# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The primary-key fingerprints in an OpenPGP key file, from gpg's own reading.

A role that adds a third-party APT repository downloads its signing key and
trusts it only when the key's fingerprint is the one the role pins (the
grafana role: ``grafana_apt_key_fingerprint``). gpg parses the key
(``gpg --show-keys --with-colons FILE``, which imports nothing); this filter
reads its machine-readable answer, documented in gnupg's doc/DETAILS: a
``pub`` record opens each key and the ``fpr`` record after it carries the
primary key's fingerprint in field 10; subkeys (``sub``) have fingerprints of
their own, which are not the key's. Documentation: ``openpgp_primary_fingerprints.yml``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError


def openpgp_primary_fingerprints(colons: str) -> list[str]:
    """Each key's primary fingerprint, upper case, in the order gpg listed them."""
    if not isinstance(colons, str):
        raise AnsibleFilterError("openpgp_primary_fingerprints expects gpg's --with-colons text")
    fingerprints: list[str] = []
    primary = False  # the next fpr record is a primary key's
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sec"):
            primary = True
        elif fields[0] in ("sub", "ssb"):
            primary = False
        elif fields[0] == "fpr" and primary and len(fields) > 9 and fields[9]:
            fingerprints.append(fields[9].upper())
            primary = False
    return fingerprints


class FilterModule:
    """OpenPGP filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"openpgp_primary_fingerprints": openpgp_primary_fingerprints}
