"""Image pruning across 20 releases: the images on the host's disk stay bounded.

Twenty versions, each the reference app with a layer of its own (8 MB that do
not compress, as successive builds differ in their code layers: the harness
builds them, harness/testbed.py series_images), are released one after the
other with playbooks/release.yml, each followed by its retirement: the
rollback window is 0 s and the retirement service is started as its timer
would start it. The retirement stops the old colour, then prunes the app's
images: it keeps what the colours record and the last
bluegreen_image_keep_versions (5) versions released, and removes the rest
(retire.py.j2, module_utils/bluegreen.py plan_prune).

Measured after every release: the bytes of image layers on the host's disk
(Docker's /system/df, LayersSize). With pruning off nothing is ever removed,
so a host without it holds every version it released: that figure is
measured by pulling back every version pruning removed (the series' and the
converge's), which is what the same releases with
bluegreen_image_keep_versions 0 leave, without running them twice.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from harness import playbook, testbed  # noqa: E402

RELEASES = 20
KEEP = 5  # bluegreen_image_keep_versions, the role's default, unchanged here
LAYER_BYTES = 8_000_000
REPOSITORY = f"{testbed.PULL_REGISTRY}/{testbed.APP_REPOSITORY}"
LAYERS = "python3 -c \"import docker; print(docker.from_env().df()['LayersSize'])\""
HEALTH = (
    'python3 -c "import ssl, urllib.request; c = ssl._create_unverified_context(); '
    "r = urllib.request.Request('https://127.0.0.1/health', headers={'Host': 'localhost'}); "
    'print(urllib.request.urlopen(r, context=c, timeout=5).read().decode())"'
)
STATE = "/var/lib/archibald/archibald/state.json"


def layers(host: Any) -> int:
    return int(host.check_output(LAYERS))


def app_tags(host: Any) -> set[str]:
    out = host.check_output(f"docker image ls --format '{{{{.Tag}}}}' {REPOSITORY}")
    return {tag for tag in out.split() if tag != "<none>"}


def test_twenty_releases_keep_the_images_on_disk_bounded(host: Any) -> None:
    versions = testbed.series_images("prune", RELEASES, LAYER_BYTES)
    earlier = app_tags(host)  # what the converge released
    before = layers(host)
    sizes: list[int] = []
    started = time.monotonic()
    for version in versions:
        rc, out, _ = playbook.run(
            "release.yml", "-e", f"app_version={version}", "-e", "bluegreen_rollback_window_s=0"
        )
        assert rc == 0, out[-3000:]
        host.check_output("systemctl start archibald-retire.service")
        sizes.append(layers(host))
    series_s = time.monotonic() - started
    assert json.loads(host.check_output(HEALTH))["version"] == versions[-1]
    state = json.loads(host.file(STATE).content_string)
    journal = host.check_output("journalctl -u archibald-retire.service --no-pager -o cat")
    assert '"prune_done"' in journal, journal[-2000:]
    # What is left: the last KEEP versions released, the stopped colour's among them.
    kept = app_tags(host)
    assert kept == set(versions[-KEEP:]), (kept, state["colors"])

    # Off: every version the host ever released stays.
    pulled_back = sorted((earlier | set(versions)) - kept)
    for version in pulled_back:
        host.check_output(f"docker pull -q {REPOSITORY}:{version}")
    off = layers(host)
    for version in pulled_back:
        host.check_output(f"docker image rm {REPOSITORY}:{version}")
    assert app_tags(host) == set(versions[-KEEP:])

    mb = 1e6
    on = sizes[-1]
    print(
        f"\n[pruning] {RELEASES} releases (each a {LAYER_BYTES / mb:.0f} MB layer of its own, "
        f"retired at once) in {series_s:.0f} s ({series_s / RELEASES:.1f} s each); image layers "
        f"on the host: before {before / mb:.0f} MB; after each release "
        f"{', '.join(f'{s / mb:.0f}' for s in sizes)} MB; after {RELEASES}: pruning on "
        f"{on / mb:.0f} MB (kept {', '.join(sorted(kept))}), off {off / mb:.0f} MB "
        f"(+{(off - on) / mb:.0f} MB: the {len(pulled_back)} versions pruning removed, "
        f"the converge's {', '.join(sorted(earlier - kept)) or 'none'} among them, pulled back)"
    )
    # Bounded: from the KEEP+1-th release on, each release adds one version and the
    # retirement removes one, so the layers stay within one version's layer.
    steady = sizes[KEEP:]
    assert max(steady) - min(steady) <= 1.5 * LAYER_BYTES, sizes
    assert off - on >= (RELEASES - KEEP - 1) * LAYER_BYTES, (off, on)
