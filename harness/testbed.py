#!/usr/bin/env python3
"""Offline test bed: Debian images, a local image registry, the app images.

Everything the tests and the sandbox need is built from what this machine can
reach (its own apt sources and the Python package index), never from Docker
Hub:

* ``archibald/debian:<release>``  debootstrap + ``docker import``
* ``archibald/vps:<release>``     the base with systemd as PID 1 (the "VPS")
* ``archibald/python:12``         the base with python3 + venv (app build base)
* ``archibald/registry:12``       Debian's ``docker-registry`` package
* ``archibald/redis:12``          Debian's redis-server and its Prometheus exporter
                                  (the accessories role's shared service)
* ``archibald/compose-proxy:12``  Debian's nginx as the seed's compose proxy (molecule/cutover)
* ``archibald/app:<version>``     the reference app, pushed to the local registry

Each image carries a content-hashed tag (``<release>-<hash>``) and a moving
tag (``<release>``) that points to it; an image is rebuilt only when its hash
changes. With ``TESTBED_IMAGE_CACHE=<file.tar>`` the images are loaded from
that file first and, when any had to be built, saved to it afterwards (the
GitHub jobs keep it in actions/cache, so each job skips debootstrap). The
registry runs as the container ``archibald-registry`` on the network
``archibald-test`` (name ``registry``, port 5000) and is published on
127.0.0.1:5000 for pushes from this machine.

Usage: testbed.py {preflight,images,registry,app-images,all,clean,info}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
IMAGES_DIR = HARNESS / "images"
APP_DIR = ROOT / "app"
NODE_DIR = ROOT / "node"

RELEASES = {"12": "bookworm", "13": "trixie"}
NETWORK = "archibald-test"
REGISTRY_CONTAINER = "archibald-registry"
REGISTRY_ALIAS = "registry"
REGISTRY_PORT = 5000
# Pushes from this machine go to the published port; hosts inside the test
# network pull from ``registry:5000`` (their Docker treats it as insecure).
PUSH_REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"
PULL_REGISTRY = f"{REGISTRY_ALIAS}:{REGISTRY_PORT}"
APP_REPOSITORY = "archibald/app"
# Versions the tests release. "bad" variants differ only by a fault switch
# baked into the image, exactly like a bad build would differ.
APP_VARIANTS: dict[str, dict[str, str]] = {
    "v1": {},
    "v2": {},
    "v3": {},
    "bad-unhealthy": {"APP_FAULT_UNHEALTHY": "1"},
    "bad-crash": {"APP_FAULT_CRASH_AFTER_S": "3"},
    "bad-errors": {"APP_FAULT_API_ERROR_RATIO": "0.3"},
    # Healthy long enough to pass the gate, then crashes every 40 s.
    "bad-crashloop": {"APP_FAULT_CRASH_AFTER_S": "40"},
}
# The example Node service's tag in the app's repository (node/example-service).
NODE_VERSION = "node1"
MIN_FREE_GB = 8
# Bump when the way images are built changes in a way the hashes cannot see.
RECIPE = "3"


class HarnessError(Exception):
    """A problem the user must fix; the message says what and how."""


def log(msg: str) -> None:
    print(f"testbed: {msg}", flush=True)


def run(
    cmd: list[str], *, check: bool = True, capture: bool = False, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(cmd, check=False, capture_output=capture, input=input_bytes)
    if check and result.returncode != 0:
        detail = ""
        if capture:
            detail = (result.stderr or b"").decode(errors="replace").strip()[-2000:]
        raise HarnessError(f"command failed ({result.returncode}): {' '.join(cmd)}\n{detail}")
    return result


def docker_ok() -> bool:
    return (
        run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], check=False, capture=True
        ).returncode
        == 0
    )


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], check=False, capture=True).returncode == 0


# --------------------------------------------------------------------------
# apt sources of this machine
# --------------------------------------------------------------------------


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
            continue
        if line.startswith("#"):
            continue
        if ":" in line and not line.startswith((" ", "\t")):
            key, _, value = line.partition(":")
            current[key.strip().lower()] = value.strip()
    return stanzas


def apt_mirrors() -> tuple[str, str | None]:
    """Return (debian mirror, security mirror or None).

    From TESTBED_DEBIAN_MIRROR (and TESTBED_DEBIAN_SECURITY_MIRROR) when set,
    e.g. on a runner that is not Debian; otherwise from this machine's apt config.
    """
    given = os.environ.get("TESTBED_DEBIAN_MIRROR", "").strip()
    if given:
        if not re.match(r"^https?://\S+$", given):
            raise HarnessError(
                f"TESTBED_DEBIAN_MIRROR={given!r} is not an http(s) URL of a Debian mirror"
            )
        given_security = os.environ.get("TESTBED_DEBIAN_SECURITY_MIRROR", "").strip()
        return given.rstrip("/"), given_security.rstrip("/") or None
    entries: list[tuple[str, list[str]]] = []
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for st in _deb822_stanzas(path.read_text()):
            if st.get("enabled", "yes") == "no" or "deb" not in st.get("types", "").split():
                continue
            for uri in st.get("uris", "").split():
                entries.append((uri, st.get("suites", "").split()))
    legacy = [Path("/etc/apt/sources.list")]
    legacy += sorted(sources.glob("*.list")) if sources.is_dir() else []
    for path in legacy:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match:
                entries.append((match.group(1), [match.group(2)]))
    main = next(
        (
            u
            for u, suites in entries
            if any(not s.endswith(("-security", "/updates")) for s in suites) and "debian" in u
        ),
        None,
    )
    security = next(
        (u for u, suites in entries if any(s.endswith(("-security", "/updates")) for s in suites)),
        None,
    )
    if main is None:
        raise HarnessError(
            "no Debian apt source found in /etc/apt/sources.list(.d): the images are "
            "built with debootstrap from this machine's own Debian mirror. Add a "
            "'deb <mirror> <suite> main' source (or a deb822 .sources file), or set "
            "TESTBED_DEBIAN_MIRROR to a Debian mirror's URL, and rerun."
        )
    return main.rstrip("/"), security.rstrip("/") if security else None


# --------------------------------------------------------------------------
# preflight
# --------------------------------------------------------------------------


def preflight() -> None:
    problems: list[str] = []
    if shutil.which("docker") is None:
        problems.append("the docker client is missing: apt-get install docker.io")
    elif not docker_ok():
        problems.append(
            "no Docker daemon answers on this machine: start it (`systemctl start docker`, "
            "or `dockerd >/var/log/dockerd.log 2>&1 &` where systemd is not PID 1; "
            "`.ci/run` does this for you) and rerun"
        )
    if shutil.which("debootstrap") is None:
        problems.append("debootstrap is missing: apt-get install debootstrap")
    try:
        apt_mirrors()
    except HarnessError as exc:
        problems.append(str(exc))
    for path in [ROOT, Path("/var/lib/docker")]:
        if path.exists():
            free_gb = shutil.disk_usage(path).free / 2**30
            if free_gb < MIN_FREE_GB:
                problems.append(
                    f"only {free_gb:.1f} GiB free under {path}; the images and test hosts need "
                    f"{MIN_FREE_GB} GiB: free some space (docker system prune, "
                    f"`make clean-images`) and rerun"
                )
    if problems:
        raise HarnessError("preflight failed:\n  - " + "\n  - ".join(problems))
    log("preflight ok (docker daemon, debootstrap, apt sources, disk)")


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _dir_hash(path: Path) -> str:
    parts: list[str | bytes] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        parts += [str(file.relative_to(path)), file.read_bytes()]
    return _hash(*parts)


# Refs built (not found up to date) by this run; the image cache is rewritten
# only when this is not empty.
BUILT: list[str] = []


def load_image_cache(path: Path) -> None:
    """Load the images saved in ``path`` (a `docker save` tar), when it exists."""
    if not path.is_file():
        log(f"no image cache at {path} yet: building, then saving it there")
        return
    started = time.monotonic()
    run(["docker", "load", "-q", "-i", str(path)], capture=True)
    log(f"loaded the cached images from {path} in {time.monotonic() - started:.0f} s")


def save_image_cache(path: Path, refs: dict[str, str]) -> None:
    """Save ``refs`` to ``path`` when this run built any of them (or it is missing)."""
    if path.is_file() and not BUILT:
        return
    started = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    run(["docker", "save", "-o", str(partial), *sorted(set(refs.values()))], capture=True)
    partial.replace(path)
    size = path.stat().st_size / 2**20
    log(
        f"saved {len(set(refs.values()))} images to {path} ({size:.0f} MiB) "
        f"in {time.monotonic() - started:.0f} s"
    )


def _tag(ref_hashed: str, ref_moving: str) -> None:
    run(["docker", "tag", ref_hashed, ref_moving])


def build_base(release: str) -> str:
    suite = RELEASES[release]
    mirror, security = apt_mirrors()
    sources = [
        f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    ]
    if security:
        sources.append(
            f"Types: deb\nURIs: {security}\nSuites: {suite}-security\n"
            "Components: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    sources_text = "\n".join(sources)
    digest = _hash(RECIPE, suite, sources_text)
    ref = f"archibald/debian:{release}-{digest}"
    if image_exists(ref):
        _tag(ref, f"archibald/debian:{release}")
        log(f"{ref} is up to date")
        return ref
    log(f"building {ref} with debootstrap ({suite}) — about a minute")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"testbed-{suite}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        result = run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=ca-certificates",
                suite,
                str(rootfs),
                mirror,
            ],
            check=False,
            capture=True,
        )
        if result.returncode != 0:
            raise HarnessError(
                f"debootstrap of {suite} from this machine's mirror failed; the mirror may be "
                f"unreachable or not carry {suite}:\n"
                + result.stdout.decode(errors="replace")[-1500:]
            )
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources_text)
        # Keep images small and apt quiet inside containers.
        (rootfs / "etc/apt/apt.conf.d/90testbed").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
            'Acquire::Retries "3";\n'
        )
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        imp = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["/bin/bash"]',
                "--change",
                "ENV DEBIAN_FRONTEND=noninteractive",
                "-",
                ref,
            ],
            stdin=tar.stdout,
            capture_output=True,
            check=False,
        )
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise HarnessError(f"docker import of {ref} failed: {imp.stderr.decode()[-800:]}")
    _tag(ref, f"archibald/debian:{release}")
    BUILT.append(ref)
    log(f"built {ref} in {time.monotonic() - started:.0f} s")
    return ref


def build_from_dockerfile(
    name: str, release: str, base: str, context: Path, extra: str = ""
) -> str:
    digest = _hash(RECIPE, base, _dir_hash(context), extra)
    ref = f"archibald/{name}:{release}-{digest}"
    moving = f"archibald/{name}:{release}"
    if image_exists(ref):
        _tag(ref, moving)
        log(f"{ref} is up to date")
        return ref
    log(f"building {ref}")
    started = time.monotonic()
    result = run(
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", ref, str(context)],
        check=False,
        capture=True,
    )
    if result.returncode != 0:
        raise HarnessError(
            f"docker build of {ref} failed:\n" + result.stderr.decode(errors="replace")[-2500:]
        )
    _tag(ref, moving)
    BUILT.append(ref)
    log(f"built {ref} in {time.monotonic() - started:.0f} s")
    return ref


def build_images(releases: list[str]) -> dict[str, str]:
    refs: dict[str, str] = {}
    for release in releases:
        base = build_base(release)
        refs[f"debian{release}"] = base
        refs[f"vps{release}"] = build_from_dockerfile("vps", release, base, IMAGES_DIR / "vps")
    base12 = refs.get("debian12") or build_base("12")
    refs["python12"] = build_from_dockerfile("python", "12", base12, IMAGES_DIR / "python")
    refs["registry12"] = build_from_dockerfile("registry", "12", base12, IMAGES_DIR / "registry")
    refs["redis12"] = build_from_dockerfile("redis", "12", base12, IMAGES_DIR / "redis")
    refs["compose-proxy12"] = build_from_dockerfile(
        "compose-proxy", "12", base12, IMAGES_DIR / "compose-proxy"
    )
    return refs


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


def ensure_network() -> None:
    if run(["docker", "network", "inspect", NETWORK], check=False, capture=True).returncode != 0:
        run(["docker", "network", "create", NETWORK], capture=True)
        log(f"created docker network {NETWORK}")


def registry_up() -> None:
    ensure_network()
    image = "archibald/registry:12"
    if not image_exists(image):
        raise HarnessError(f"{image} is missing: run `make images` first")
    want = (
        run(["docker", "image", "inspect", "-f", "{{.Id}}", image], capture=True)
        .stdout.decode()
        .strip()
    )
    state = run(
        ["docker", "inspect", "-f", "{{.State.Running}} {{.Image}}", REGISTRY_CONTAINER],
        check=False,
        capture=True,
    )
    if state.returncode == 0:
        running, have = state.stdout.decode().split()
        if running == "true" and have == want:
            _wait_registry()
            log(f"registry {REGISTRY_CONTAINER} already running")
            return
        run(["docker", "rm", "-f", REGISTRY_CONTAINER], capture=True)
    run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            REGISTRY_CONTAINER,
            "--restart",
            "unless-stopped",
            "--network",
            NETWORK,
            "--network-alias",
            REGISTRY_ALIAS,
            "-p",
            f"127.0.0.1:{REGISTRY_PORT}:5000",
            "-v",
            "archibald-registry-data:/var/lib/docker-registry",
            image,
        ],
        capture=True,
    )
    _wait_registry()
    log(
        f"registry {REGISTRY_CONTAINER} started ({PUSH_REGISTRY} here, "
        f"{PULL_REGISTRY} on {NETWORK})"
    )


def seed_registry() -> None:
    """Push the images role tests run: a probe container, a shared service, and the
    seed's compose proxy (molecule/cutover's hosts pull it and replace it)."""
    for name, why in (
        ("python", "probe image for role tests"),
        ("redis", "a shared service"),
        ("compose-proxy", "molecule/cutover's old proxy"),
    ):
        remote = f"{PUSH_REGISTRY}/testbed/{name}:12"
        run(["docker", "tag", f"archibald/{name}:12", remote])
        run(["docker", "push", "-q", remote], capture=True)
        log(f"pushed {PULL_REGISTRY}/testbed/{name}:12 ({why})")


def _wait_registry(timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{PUSH_REGISTRY}/v2/", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    logs = run(["docker", "logs", "--tail", "20", REGISTRY_CONTAINER], check=False, capture=True)
    raise HarnessError(
        f"the local registry did not answer on {PUSH_REGISTRY} within "
        f"{timeout:.0f} s ({last}); its log:\n"
        + (logs.stdout + logs.stderr).decode(errors="replace")
    )


# --------------------------------------------------------------------------
# app images
# --------------------------------------------------------------------------


def app_images() -> list[str]:
    """Build the reference app for each test version and push it to the registry."""
    if not (APP_DIR / "Dockerfile").is_file():
        raise HarnessError("app/Dockerfile is missing")
    wheels = APP_DIR / ".wheels"
    req = APP_DIR / "requirements.txt"
    req_hash = _hash(req.read_bytes())
    stamp = wheels / f".built-{req_hash}"
    if not stamp.is_file():
        log("building the app's wheels from app/requirements.txt")
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir()
        run([sys.executable, "-m", "pip", "wheel", "-q", "-r", str(req), "-w", str(wheels)])
        stamp.write_text("")
    base = "archibald/python:12"
    if not image_exists(base):
        raise HarnessError(f"{base} is missing: run `make images` first")
    pushed: list[str] = []
    app_hash = _hash(
        RECIPE,
        _dir_hash(APP_DIR / "archibald_app"),
        (APP_DIR / "Dockerfile").read_bytes(),
        req_hash,
    )
    for version, env in APP_VARIANTS.items():
        local = f"{APP_REPOSITORY}:{version}"
        remote = f"{PUSH_REGISTRY}/{APP_REPOSITORY}:{version}"
        label = _hash(app_hash, json.dumps(env, sort_keys=True), version)
        have = run(
            [
                "docker",
                "image",
                "inspect",
                "-f",
                '{{index .Config.Labels "org.archibald.testbed"}}',
                local,
            ],
            check=False,
            capture=True,
        )
        if have.returncode != 0 or have.stdout.decode().strip() != label:
            log(f"building {local}")
            with tempfile.TemporaryDirectory() as tmp:
                if env:
                    # A bad release: the same app with a fault switched on in the image.
                    dockerfile = Path(tmp) / "Dockerfile"
                    lines = [f"FROM {APP_REPOSITORY}:v1"]
                    lines += [f"ENV {k}={v}" for k, v in env.items()]
                    lines += [
                        f"ENV APP_VERSION={version}",
                        f'LABEL org.archibald.testbed="{label}" '
                        f'org.opencontainers.image.version="{version}"',
                    ]
                    dockerfile.write_text("\n".join(lines) + "\n")
                    run(["docker", "build", "-q", "-t", local, tmp], capture=True)
                else:
                    run(
                        [
                            "docker",
                            "build",
                            "-q",
                            "--build-arg",
                            f"BASE_IMAGE={base}",
                            "--build-arg",
                            f"APP_VERSION={version}",
                            "--label",
                            f"org.archibald.testbed={label}",
                            "-t",
                            local,
                            str(APP_DIR),
                        ],
                        capture=True,
                    )
        run(["docker", "tag", local, remote])
        run(["docker", "push", "-q", remote], capture=True)
        pushed.append(f"{PULL_REGISTRY}/{APP_REPOSITORY}:{version}")
    log("app images in the registry: " + ", ".join(v for v in APP_VARIANTS))
    # The example Node service, released by the whole stack like any version
    # (molecule/default/tests/test_16_node_service.py).
    node = node_example_image()
    remote = f"{PUSH_REGISTRY}/{APP_REPOSITORY}:{NODE_VERSION}"
    run(["docker", "tag", node, remote])
    run(["docker", "push", "-q", remote], capture=True)
    pushed.append(f"{PULL_REGISTRY}/{APP_REPOSITORY}:{NODE_VERSION}")
    log(f"the example Node service: {node}, in the registry as {NODE_VERSION}")
    return pushed


def node_example_image() -> str:
    """Build the example Node service (node/example-service) on archibald/debian:12.

    npm installs on this machine, from the registry its npm config names (the
    repository names none): the package is built with tsc, then installed into
    the example as a copy (--install-links), and app/ is staged for the image.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise HarnessError("npm is missing: apt-get install nodejs npm (system-packages.txt)")
    base = "archibald/debian:12"
    if not image_exists(base):
        raise HarnessError(f"{base} is missing: run `make images` first")
    package, example = NODE_DIR / "archibald-contract", NODE_DIR / "example-service"
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    run([npm, "ci", "--prefix", str(package), *quiet], capture=True)
    run([npm, "run", "--prefix", str(package), "--silent", "build"], capture=True)
    run(
        [npm, "ci", "--prefix", str(example), "--omit=dev", "--install-links", *quiet], capture=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy(IMAGES_DIR / "node-example" / "Dockerfile", context / "Dockerfile")
        (context / "app").mkdir()
        for name in ("server.js", "package.json"):
            shutil.copy(example / name, context / "app" / name)
        shutil.copytree(example / "node_modules", context / "app" / "node_modules")
        return build_from_dockerfile("node-example", "12", base, context)


def series_images(prefix: str, count: int, layer_bytes: int) -> list[str]:
    """`count` versions of the reference app, <prefix>01, <prefix>02, ..., each v1
    with a layer of its own (`layer_bytes` bytes that do not compress), as
    successive builds of an app differ in their code layers; pushed to the
    registry. The bytes come from the version's name, so a rerun builds the same
    layers (Docker's cache) instead of new ones. Returns the versions."""
    versions = [f"{prefix}{n:02d}" for n in range(1, count + 1)]
    for version in versions:
        local = f"{APP_REPOSITORY}:{version}"
        remote = f"{PUSH_REGISTRY}/{APP_REPOSITORY}:{version}"
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "layer.bin").write_bytes(random.Random(version).randbytes(layer_bytes))
            Path(tmp, "Dockerfile").write_text(
                f"FROM {APP_REPOSITORY}:v1\n"
                "COPY layer.bin /opt/archibald-series/layer.bin\n"
                f"ENV APP_VERSION={version}\n"
                f'LABEL org.opencontainers.image.version="{version}"\n'
            )
            # Docker's cache makes a rebuild on the same v1 a no-op.
            run(["docker", "build", "-q", "-t", local, tmp], capture=True)
        run(["docker", "tag", local, remote])
        run(["docker", "push", "-q", remote], capture=True)
    log(f"series in the registry: {versions[0]} to {versions[-1]}, {layer_bytes} bytes each")
    return versions


# --------------------------------------------------------------------------


def clean() -> None:
    run(["docker", "rm", "-f", REGISTRY_CONTAINER], check=False, capture=True)
    out = (
        run(
            ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "archibald/*"],
            capture=True,
        )
        .stdout.decode()
        .split()
    )
    if out:
        run(["docker", "image", "rm", "-f", *out], check=False, capture=True)
    log(f"removed {len(out)} image tags and the registry container")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", choices=["preflight", "images", "registry", "app-images", "all", "clean", "info"]
    )
    parser.add_argument(
        "--releases",
        default=os.environ.get("TESTBED_RELEASES", "12,13"),
        help="Debian releases to build VPS images for (default 12,13)",
    )
    args = parser.parse_args(argv)
    releases = [r.strip() for r in args.releases.split(",") if r.strip()]
    unknown = [r for r in releases if r not in RELEASES]
    if unknown:
        parser.error(f"unknown Debian release(s) {unknown}; expected some of {list(RELEASES)}")
    started = time.monotonic()
    try:
        if args.command == "clean":
            clean()
            return 0
        preflight()
        if args.command == "info":
            _mirror, security = apt_mirrors()
            log(
                f"apt sources found (debian mirror and {'a' if security else 'no'} security mirror)"
            )
        if args.command in ("images", "all"):
            cache = os.environ.get("TESTBED_IMAGE_CACHE", "").strip()
            if cache:
                load_image_cache(Path(cache))
            refs = build_images(releases)
            if cache:
                save_image_cache(Path(cache), refs)
        if args.command in ("registry", "all"):
            registry_up()
            seed_registry()
        if args.command in ("app-images", "all"):
            registry_up()
            app_images()
    except HarnessError as exc:
        print(f"testbed: ERROR: {exc}", file=sys.stderr)
        return 1
    log(f"{args.command} done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
