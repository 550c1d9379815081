"""Verify role `base`: firewall beside Docker, deploy user, SSH, time, upgrades, journald.

The connection tests run from the Molecule controller against the host
container's address on the test network, i.e. from outside the host.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness import playbook

SCENARIO = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).parents[1]))
KEY = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "deploy_id_ed25519"
TABLE = "inet base_filter"
TABLE_LINE = f"table {TABLE}"
IMAGE = "registry:5000/testbed/python:12"
SECURITY_PATTERNS = [
    "origin=Debian,codename=${distro_codename},label=Debian-Security",
    "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
]


def _address(host) -> str:
    """The host container's IPv4 address on the test network (its eth0)."""
    out = host.check_output("ip -4 -o addr show dev eth0")
    return re.search(r"inet ([0-9.]+)/", out).group(1)


def _connect(address: str, port: int, timeout: float = 2.0) -> str:
    """Open a TCP connection from the controller: 'open', 'refused' or 'dropped'."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "dropped"
    return "open"


def _ssh(
    host, user: str, *args: str, command: tuple[str, ...] = ("sudo -n true && echo logged-in",)
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(KEY),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            *args,
            f"{user}@{_address(host)}",
            *command,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _in_container(host) -> bool:
    return host.run("systemd-detect-virt --container").rc == 0


def _tables(host) -> set[str]:
    return set(host.check_output("nft list tables").splitlines())


@functools.cache
def _lockout_run(limit: str) -> tuple[int, str]:
    """lockout.yml against one host (once per host), through harness/playbook.py."""
    rc, output, _ = playbook.run(SCENARIO / "lockout.yml", limit=limit, timeout=300)
    return rc, output


@pytest.fixture()
def listener(host):
    """A throwaway HTTP server on 0.0.0.0 inside the host, per port; stopped afterwards."""
    units: list[str] = []

    def start(port: int) -> None:
        unit = f"molecule-probe-{port}"
        host.run(f"systemctl stop {unit}")
        host.check_output(f"systemd-run --unit {unit} python3 -m http.server {port} --bind 0.0.0.0")
        units.append(unit)
        deadline = time.monotonic() + 15
        while not host.socket(f"tcp://0.0.0.0:{port}").is_listening:
            assert time.monotonic() < deadline, f"the probe server on {port} did not start"
            time.sleep(0.2)

    yield start
    for unit in units:
        host.run(f"systemctl stop {unit}")


# Firewall ------------------------------------------------------------------


def test_nftables_enabled_and_table_loaded(host) -> None:
    service = host.service("nftables")
    assert service.is_enabled
    assert host.run("systemctl is-active nftables").stdout.strip() == "active"
    assert TABLE_LINE in _tables(host)


def test_table_has_policy_drop_and_the_allowed_ports(host) -> None:
    table = host.check_output(f"nft list table {TABLE}")
    assert "type filter hook input priority filter; policy drop;" in table
    assert "ct state established,related accept" in table
    assert "ct state invalid drop" in table
    assert 'iif "lo" accept' in table
    assert "tcp dport 22 accept" in table
    assert "tcp dport { 80, 443, 8443 } accept" in table
    assert "ip saddr 198.51.100.0/24 accept" in table
    assert "ip6 saddr 2001:db8::/32 accept" in table
    assert "limit rate over 10/minute burst 20 packets } drop" in table
    # Forwarding and NAT are Docker's: nothing of ours hooks there.
    assert "hook forward" not in table
    assert "hook prerouting" not in table


def test_config_never_flushes_the_ruleset(host) -> None:
    config = host.file("/etc/nftables.conf")
    assert "Ansible managed" in config.content_string
    rules = [line.strip() for line in config.content_string.splitlines()]
    assert not [line for line in rules if line.startswith("flush")]
    host.check_output("nft -c -f /etc/nftables.conf")
    dropin = host.check_output("systemctl cat nftables")
    assert (
        "ExecStop=/usr/sbin/nft 'table inet base_filter { }; delete table inet base_filter'"
        in dropin
    )


def test_allowed_ports_answer_and_others_are_dropped(host, listener) -> None:
    address = _address(host)
    listener(8081)  # not in any list
    listener(8443)  # in base_firewall_extra_tcp_ports
    # The server on 8081 is up (loopback is always allowed) ...
    host.check_output("curl -fsS --max-time 5 -o /dev/null http://127.0.0.1:8081/")
    # ... but from outside its packets are dropped, not even refused.
    assert _connect(address, 8081) == "dropped"
    assert _connect(address, 8443) == "open"
    assert _connect(address, 22) == "open"
    # Nothing listens on 80: the firewall lets it through and the kernel refuses.
    assert _connect(address, 80) == "refused"


def test_docker_rules_survive_reload_restart_and_stop(host) -> None:
    docker_tables = {"table ip filter", "table ip nat"}
    assert docker_tables <= _tables(host), "Docker's tables are missing before the test"
    for action in ("reload", "restart", "stop", "start"):
        host.check_output(f"systemctl {action} nftables")
        tables = _tables(host)
        assert docker_tables <= tables, f"Docker's tables are gone after `systemctl {action}`"
        assert (TABLE_LINE in tables) == (action != "stop"), action
        nat = host.check_output("iptables -t nat -S")
        assert "-N DOCKER" in nat
        assert "MASQUERADE" in nat
        assert "-N DOCKER" in host.check_output("iptables -S")


def test_containers_still_reach_the_network(host) -> None:
    """Forwarding and masquerading work after a restart of our firewall."""
    host.check_output("systemctl restart nftables")
    registry = host.check_output("getent hosts registry").split()[0]
    host.check_output(f"docker pull -q {IMAGE}")
    host.check_output(
        f"docker run --rm {IMAGE} python3 -c "
        f"\"import socket; socket.create_connection(('{registry}', 5000), timeout=5).close()\""
    )


# Deploy user and SSH -------------------------------------------------------


def test_deploy_user_and_exclusive_key(host) -> None:
    user = host.user("deploy")
    assert user.exists
    assert user.shell == "/bin/bash"
    keys = host.file("/home/deploy/.ssh/authorized_keys")
    assert keys.user == "deploy"
    assert keys.mode == 0o600
    public = (KEY.parent / (KEY.name + ".pub")).read_text().split()[:2]
    lines = [line for line in keys.content_string.splitlines() if line.strip()]
    assert [line.split()[:2] for line in lines] == [public]


def test_docker_group_only_when_asked(host) -> None:
    groups = host.user("deploy").groups
    if host.backend.host.endswith("deb12"):
        assert "docker" in groups
    else:
        assert "docker" not in groups


def test_passwordless_sudo(host) -> None:
    sudoers = host.file("/etc/sudoers.d/deploy")
    assert sudoers.mode == 0o440
    assert sudoers.user == "root"
    host.check_output("visudo -c")
    assert "(ALL : ALL) NOPASSWD: ALL" in host.check_output("sudo -l -U deploy")


def test_sshd_effective_settings(host) -> None:
    effective = set(host.check_output("sshd -T").splitlines())
    for line in (
        "port 22",
        "permitrootlogin no",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "pubkeyauthentication yes",
        "x11forwarding no",
        "maxauthtries 3",
        "logingracetime 30",
        "allowusers deploy",
        "allowtcpforwarding local",
        "allowagentforwarding no",
        "allowstreamlocalforwarding no",
        "gatewayports no",
        "permittunnel no",
    ):
        assert line in effective, line
    assert host.service("ssh").is_running


def test_deploy_logs_in_with_its_key_and_uses_sudo(host) -> None:
    result = _ssh(host, "deploy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "logged-in"


def test_only_local_forwarding_is_allowed(host) -> None:
    """`ssh -L` to a loopback service works (OPERATIONS.md reaches Prometheus that way);
    `ssh -R`, which would open a port on the host for whoever holds the key, is refused."""
    # -W is -L's channel (direct-tcpip) on standard input and output: the host's
    # own sshd answers through it with its banner.
    local = _ssh(host, "deploy", "-W", "127.0.0.1:22", command=())
    remote = _ssh(host, "deploy", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22")
    print(f"\n[ssh] -W: {local.stdout[:20]!r}; -R: rc {remote.returncode}, {remote.stderr.strip()}")
    assert local.stdout.startswith("SSH-2.0-"), local.stderr
    assert remote.returncode != 0 and "remote port forwarding failed" in remote.stderr, remote


def test_root_and_passwords_are_refused(host) -> None:
    root = _ssh(host, "root")
    assert root.returncode == 255
    assert "Permission denied" in root.stderr
    # Asked for a password, the server offers nothing but keys.
    password = _ssh(host, "deploy", "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode == 255
    assert "Permission denied (publickey)" in password.stderr


def test_refuses_to_lock_everyone_out(host) -> None:
    rc, output = _lockout_run(host.backend.host)
    said = " ".join(output.split())
    assert rc != 0
    assert "base_deploy_authorized_keys is empty" in said
    assert "Set base_deploy_authorized_keys" in said
    # It refused before touching anything: the key is still there.
    assert host.file("/home/deploy/.ssh/authorized_keys").content_string.strip()


# Time, upgrades, journal ---------------------------------------------------


def test_timesyncd_enabled_and_configured(host) -> None:
    assert host.service("systemd-timesyncd").is_enabled
    config = host.check_output("systemd-analyze cat-config systemd/timesyncd.conf")
    assert "NTP=ntp1.example.org ntp2.example.org" in config
    condition = host.check_output("systemctl show -P ConditionResult systemd-timesyncd")
    if _in_container(host):
        # The unit skips itself in a container (ConditionVirtualization=!container):
        # the container host keeps the clock. Nothing here can claim a sync.
        assert condition == "no"
    else:
        assert host.service("systemd-timesyncd").is_running


def test_unattended_upgrades_take_security_updates_only(host) -> None:
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    patterns = re.findall(r'Origins-Pattern:: "(.*)";', dump)
    assert patterns == SECURITY_PATTERNS
    config = host.check_output("apt-config dump Unattended-Upgrade")
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in config
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled


def test_unattended_upgrade_dry_run(host) -> None:
    result = host.run("unattended-upgrade --dry-run --debug")
    assert result.rc == 0, result.stderr
    out = result.stdout + result.stderr
    allowed = re.search(r"Allowed origins are: (.*)", out).group(1).split(", ")
    assert len(allowed) == len(SECURITY_PATTERNS)
    assert all(origin.endswith(",label=Debian-Security") for origin in allowed), allowed


def test_journald_limits_are_live(host) -> None:
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "/etc/systemd/journald.conf.d/10-archibald.conf" in config
    for line in ("Storage=persistent", "SystemMaxUse=500M", "SystemKeepFree=1G"):
        assert line in config
    assert host.file("/var/log/journal").is_directory
    # journald reports the limit it applies whenever it (re)opens the system journal.
    log = host.check_output("journalctl -b -u systemd-journald --no-pager -o cat")
    last = [line for line in log.splitlines() if line.startswith("System Journal")][-1]
    assert re.search(r"max 500(\.0)?M", last), last


# Last, because it uses up this controller's SSH allowance. -----------------


@pytest.fixture()
def reset_ssh_limit(host):
    yield
    host.run(f"nft flush set {TABLE} ssh_ratelimit_v4")
    host.run(f"nft flush set {TABLE} ssh_ratelimit_v6")


def test_ssh_is_rate_limited_per_source(host, reset_ssh_limit) -> None:
    address = _address(host)
    results = [_connect(address, 22, timeout=0.5) for _ in range(40)]
    assert "open" in results
    assert "dropped" in results, results
    first_drop = results.index("dropped")
    # The burst (20) passes, less the few connections earlier tests made ...
    assert first_drop >= 10, results
    # ... then one new connection per 6 s (10/minute) at most.
    assert results[first_drop:].count("open") <= 3, results
    host.check_output(f"nft flush set {TABLE} ssh_ratelimit_v4")
    assert _connect(address, 22) == "open"


# Two network namespaces of the host joined by a veth pair (the test network has
# no IPv6, and loopback is always let in): "srv" loads the host's own ruleset,
# "cli" opens one SSH connection from each of its addresses. Unique local
# addresses (fd00::/8): converge.yml trusts 2001:db8::/32, which skips the meter.
SSH_64_SCRIPT = """
set -e
trap 'ip netns del srv 2>/dev/null; ip netns del cli 2>/dev/null' EXIT
ip netns add srv
ip netns add cli
ip link add v0 netns srv type veth peer name v1 netns cli
ip -n srv link set lo up
ip -n srv link set v0 up
ip -n cli link set v1 up
ip -n srv -6 addr add fd00:1:2:1::1/64 dev v0 nodad
ip -n srv -6 route add fd00:1:2::/48 dev v0
for a in {sources}; do ip -n cli -6 addr add $a/64 dev v1 nodad; done
ip -n cli -6 route add fd00:1:2:1::/64 dev v1
ip netns exec srv nft -f /etc/nftables.conf
for a in {sources}; do
  ip netns exec cli python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET6)
s.settimeout(3)
s.bind((sys.argv[1], 0))
s.connect_ex(("fd00:1:2:1::1", 22))' $a
done
ip netns exec srv nft -j list set {table} ssh_ratelimit_v6
"""


def test_ssh_is_limited_per_ipv6_64(host) -> None:
    """The SSH meter keys an IPv6 client by its /64: connections from two addresses of
    one /64 make one element, another /64 its own, with the host's own ruleset."""
    sources = "fd00:1:2:2::10 fd00:1:2:2::11 fd00:1:2:3::10"
    script = SSH_64_SCRIPT.format(sources=sources, table=TABLE)
    done = host.run(f"bash -c {shlex.quote(script)}")
    assert done.rc == 0, done.stderr
    listed = json.loads(done.stdout)["nftables"]
    (found,) = [item["set"] for item in listed if "set" in item]
    keys = sorted(e["elem"]["val"] if isinstance(e, dict) else e for e in found.get("elem", []))
    print(f"\n[ssh /64] three sources, meter elements: {keys}")
    assert keys == ["fd00:1:2:2::", "fd00:1:2:3::"], keys


SYSCTL_FILE = "/etc/sysctl.d/60-archibald-hardening.conf"


def test_kernel_hardening_is_written_and_its_network_keys_apply(host) -> None:
    """The test hosts are containers, whose /proc/sys is the CI machine's and read-only:
    systemd-sysctl skips itself there, as the role says. What can be proven here: the
    file is in place, and its network keys (each network namespace has its own) apply and
    read back in a fresh network namespace of the host. The others (fs., kernel.) are the
    whole machine's and are never written here; the role checks them live on a real host."""
    conf = host.file(SYSCTL_FILE)
    assert conf.user == "root" and conf.mode == 0o644
    wanted = dict(
        (part.strip() for part in line.split("=", 1))
        for line in conf.content_string.splitlines()
        if line and not line.startswith("#")
    )
    assert wanted["net.ipv4.conf.all.accept_redirects"] == "0", wanted
    assert wanted["fs.suid_dumpable"] == "0", wanted
    network = {key: value for key, value in wanted.items() if key.startswith("net.")}
    keys = " ".join(network)
    out = host.check_output(
        "unshare --mount --net sh -c 'mount -o remount,rw,bind /proc/sys"
        f" && grep ^net. {SYSCTL_FILE} > /tmp/net.conf && sysctl -q -p /tmp/net.conf"
        f" && rm /tmp/net.conf && sysctl --values {keys}'"
    )
    live = dict(zip(network, out.split("\n"), strict=True))
    print(f"\n[sysctl] {len(live)} network keys applied in a network namespace of the host")
    assert live == network
    skipped = host.run("systemctl show -p ConditionResult --value systemd-sysctl").stdout.strip()
    assert _in_container(host) and skipped == "no", skipped
