#!/usr/bin/env python3
"""Print the digest a registry holds for an image tag: ``digest=sha256:<64 hex>``.

    scripts/image-digest.py <registry>/<repository>:<tag>

Asks the registry itself (OCI distribution API: HEAD of the manifest, the
``Docker-Content-Digest`` header), taking a bearer token when the registry asks
for one (ghcr.io does, also for public images): REGISTRY_USER and
REGISTRY_PASSWORD (in GitHub Actions the actor and GITHUB_TOKEN) are sent to
the token service named in the registry's challenge. ``http://`` is used for
127.0.0.1/localhost registries, ``https://`` for every other one. Exits 3
when the tag does not exist (404), 1 with a message on any other failure.
Standard library only: CD runs it before any virtualenv exists.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The tag: Docker's grammar, as the bluegreen role's _bluegreen_tag_grammar
# (tests/unit/test_version_tag.py holds both to one table).
REFERENCE = re.compile(
    r"(?P<registry>[^/]+)/(?P<repository>[a-z0-9._/-]+):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
)


class DigestError(Exception):
    """The digest could not be read; the message says why."""

    code = 1


class NotFound(DigestError):
    """The registry has no such tag."""

    code = 3


def split(reference: str) -> tuple[str, str, str]:
    match = REFERENCE.fullmatch(reference)
    if not match or (
        "." not in match["registry"]
        and ":" not in match["registry"]
        and match["registry"] != "localhost"
    ):
        raise DigestError(
            f"{reference!r} is not <registry>/<repository>:<tag> (e.g. ghcr.io/owner/app:<sha>)"
        )
    return match["registry"], match["repository"], match["tag"]


def base_url(registry: str) -> str:
    host = registry.rsplit(":", 1)[0]
    scheme = "http" if host in ("127.0.0.1", "localhost") else "https"
    return f"{scheme}://{registry}"


def bearer_token(challenge: str, repository: str) -> str:
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if "realm" not in params:
        raise DigestError(f"the registry's challenge names no token service: {challenge!r}")
    query = {"scope": params.get("scope", f"repository:{repository}:pull")}
    if "service" in params:
        query["service"] = params["service"]
    request = urllib.request.Request(f"{params['realm']}?{urllib.parse.urlencode(query)}")
    user, password = os.environ.get("REGISTRY_USER", ""), os.environ.get("REGISTRY_PASSWORD", "")
    if user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as exc:
        raise DigestError(
            f"the token service refused ({exc.code}): set REGISTRY_USER and REGISTRY_PASSWORD "
            "(a token that may read packages)"
        ) from exc
    token = body.get("token") or body.get("access_token")
    if not token:
        raise DigestError("the token service answered without a token")
    return str(token)


def digest_of(reference: str) -> str:
    registry, repository, tag = split(reference)
    url = f"{base_url(registry)}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": ACCEPT}
    for _attempt in range(2):
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                digest = answer.headers.get("Docker-Content-Digest", "")
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            first_try = "Authorization" not in headers
            if exc.code == 401 and challenge.lower().startswith("bearer") and first_try:
                headers["Authorization"] = f"Bearer {bearer_token(challenge, repository)}"
                continue
            if exc.code == 404:
                raise NotFound(f"{reference} does not exist in the registry (404)") from exc
            raise DigestError(f"{reference}: the registry answered {exc.code}") from exc
        except urllib.error.URLError as exc:
            raise DigestError(f"{reference}: the registry cannot be reached: {exc.reason}") from exc
        if not DIGEST.fullmatch(digest):
            raise DigestError(f"{reference}: the registry gave no sha256 digest (got {digest!r})")
        return digest
    raise DigestError(f"{reference}: the registry refused the token")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(f"digest={digest_of(argv[0])}")
    except DigestError as exc:
        print(f"::error::{exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
