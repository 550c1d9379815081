"""The harness finds this machine's apt sources and refuses bad set-ups clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import testbed

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.mark.parametrize(
    ("sources", "legacy", "expected"),
    [
        (DEB822, "", ("http://mirror.example/debian", "http://mirror.example/debian-security")),
        ("", "deb http://m.example/debian bookworm main\n", ("http://m.example/debian", None)),
        (
            "",
            "deb [arch=amd64] http://m.example/debian/ bookworm main\n"
            "deb http://s.example/debian-security bookworm-security main\n",
            ("http://m.example/debian", "http://s.example/debian-security"),
        ),
    ],
)
def test_apt_mirrors_are_read_from_the_machine(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sources: str,
    legacy: str,
    expected: tuple[str, str | None],
) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    if sources:
        (apt / "sources.list.d/debian.sources").write_text(sources)
    (apt / "sources.list").write_text(legacy)
    _patch_paths(monkeypatch, apt)
    monkeypatch.delenv("TESTBED_DEBIAN_MIRROR", raising=False)
    assert testbed.apt_mirrors() == expected


def test_mirror_from_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d/debian.sources").write_text(DEB822)
    _patch_paths(monkeypatch, apt)
    monkeypatch.setenv("TESTBED_DEBIAN_MIRROR", "http://given.example/debian/")
    monkeypatch.setenv("TESTBED_DEBIAN_SECURITY_MIRROR", "http://given.example/debian-security")
    assert testbed.apt_mirrors() == (
        "http://given.example/debian",
        "http://given.example/debian-security",
    )
    monkeypatch.delenv("TESTBED_DEBIAN_SECURITY_MIRROR")
    assert testbed.apt_mirrors() == ("http://given.example/debian", None)
    monkeypatch.setenv("TESTBED_DEBIAN_MIRROR", "given.example/debian")
    with pytest.raises(testbed.HarnessError, match="is not an http"):
        testbed.apt_mirrors()


def test_no_apt_sources_says_what_to_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    _patch_paths(monkeypatch, apt)
    monkeypatch.delenv("TESTBED_DEBIAN_MIRROR", raising=False)
    with pytest.raises(testbed.HarnessError, match=r"no Debian apt source found.*Add a"):
        testbed.apt_mirrors()


def test_preflight_names_a_missing_docker_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testbed, "docker_ok", lambda: False)
    with pytest.raises(testbed.HarnessError, match=r"no Docker daemon answers.*start it"):
        testbed.preflight()


def test_preflight_names_a_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    class Usage:
        free = 2 * 2**30

    monkeypatch.setattr(testbed, "docker_ok", lambda: True)
    monkeypatch.setattr(testbed.shutil, "disk_usage", lambda _p: Usage())
    with pytest.raises(testbed.HarnessError, match=r"only 2\.0 GiB free .* need 8 GiB"):
        testbed.preflight()


def _patch_paths(monkeypatch: pytest.MonkeyPatch, apt: Path) -> None:
    real = testbed.Path

    def fake(path: str | Path) -> Path:
        text = str(path)
        if text.startswith("/etc/apt"):
            return real(str(apt) + text[len("/etc/apt") :])
        return real(text)

    monkeypatch.setattr(testbed, "Path", fake)


def test_image_cache_is_loaded_first_and_saved_only_when_something_was_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_kw: object) -> object:
        calls.append(cmd)
        if cmd[:2] == ["docker", "save"]:
            Path(cmd[cmd.index("-o") + 1]).write_bytes(b"tar")
        return None

    monkeypatch.setattr(testbed, "run", fake_run)
    monkeypatch.setattr(testbed, "BUILT", [])
    cache = tmp_path / "cache" / "images.tar"
    refs = {"debian12": "archibald/debian:12-a", "vps12": "archibald/vps:12-b"}

    testbed.load_image_cache(cache)  # nothing cached yet: nothing to load
    testbed.save_image_cache(cache, refs)  # missing: written, the hashed refs only
    assert calls == [["docker", "save", "-o", f"{cache}.partial", *sorted(refs.values())]]
    assert cache.read_bytes() == b"tar" and not Path(f"{cache}.partial").exists()

    calls.clear()
    testbed.load_image_cache(cache)
    testbed.save_image_cache(cache, refs)  # all were up to date: the cache stays
    assert calls == [["docker", "load", "-q", "-i", str(cache)]]

    calls.clear()
    testbed.BUILT.append("archibald/vps:12-b")
    testbed.save_image_cache(cache, refs)  # a new recipe built an image: rewritten
    assert calls and calls[0][:2] == ["docker", "save"]
