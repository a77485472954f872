"""The lab network: a bridge on the host and one network namespace per board.

Each board's CPU runs inside its own namespace with one veth link to the
`sbdlab0` bridge, so a scan of its address sees that board and nothing else.
Addresses come from 198.18.0.0/24 (RFC 2544's benchmarking range, never
routed on the internet), and the namespaces get no default route: traffic
from a board cannot leave the lab. Without root, boards share the host's
loopback instead, and reports say which checks that weakens.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sbd_harness.errors import SbdError

BRIDGE = "sbdlab0"
SUBNET = ipaddress.ip_network(os.environ.get("SBD_LAB_SUBNET", "198.18.0.0/24"))
HOST_ADDRESS = str(SUBNET.network_address + 1)
FIRST_BOARD_HOST = 10
# Leases live outside any one state folder: every run on this machine (a
# developer's, CI's, the tests') shares the bridge, so addresses are leased
# machine-wide, each lease naming the board folder that holds it.
LEASES = Path(os.environ.get("SBD_LAB_LEASES", "/run/sbd-lab/leases"))

LOOPBACK_WEAKENS = [
    "port scans see the host's services as well as the board's",
    "the board's outbound connections cannot be told apart from the host's",
    "network outages cannot be cut per board",
]


class LabNetworkError(SbdError, RuntimeError):
    pass


@dataclass(frozen=True)
class BoardNetwork:
    mode: str            # "netns" or "loopback"
    address: str
    netmask: str
    gateway: str
    netns: str | None
    host_if: str | None

    def as_conf(self, ssid: str, psk: str) -> dict:
        conf = {"mode": self.mode, "address": self.address, "netmask": self.netmask,
                "gateway": self.gateway, "dns": self.gateway, "ssid": ssid, "psk": psk,
                "netns": self.netns, "host_if": self.host_if, "host_address": self.gateway}
        if self.netns:
            conf["link_state"] = "/sys/class/net/eth0/operstate"
        return conf


def namespaces_available() -> bool:
    """Root and iproute2: the condition for real per-board networks."""
    if os.environ.get("SBD_NO_NETNS"):
        return False
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabNetworkError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def bridge_mac() -> str:
    """The bridge's own MAC: locally administered, unicast, from the host address (02:53:42 "SB",
    then the address's last three bytes)."""
    tail = ipaddress.ip_address(HOST_ADDRESS).packed[1:]
    return "02:53:42:" + ":".join(f"{b:02x}" for b in tail)


def _fix_bridge_mac() -> None:
    """A Linux bridge without an address of its own takes the lowest MAC among its ports, so its
    MAC changed every time a board (any run's on this machine) came or went. Every board's ARP
    entry for the host then named a MAC nobody answers to until the entry was probed again, 5
    to 45 s without a path to the broker: connections timed out at random. A fixed address
    (addr_assign_type 3, "set") keeps it, as an access point or a router keeps its own."""
    try:
        assigned = Path(f"/sys/class/net/{BRIDGE}/addr_assign_type").read_text().strip()
    except OSError:
        assigned = ""
    if assigned != "3":
        _ip("link", "set", BRIDGE, "address", bridge_mac(), check=False)


def ensure_bridge() -> None:
    """The lab bridge, made once: boards started at the same time (sbd board start --count) take turns."""
    import fcntl
    LEASES.mkdir(parents=True, exist_ok=True)
    with open(LEASES.parent / "bridge.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_bridge()


def _ensure_bridge() -> None:
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "address", bridge_mac(), "type", "bridge", check=False)
    _fix_bridge_mac()
    prefix = f"{HOST_ADDRESS}/{SUBNET.prefixlen}"
    if prefix not in _ip("-o", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", prefix, "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def _lease(owner: Path) -> int:
    """Leases a host number for the board in `owner`; reclaims leases of boards gone. One
    process at a time, machine-wide: two that found the same stale lease both reclaimed it,
    and the second destroyed the namespace the first had just made (`ip link set ... netns`
    then failed "Invalid netns value" in a run beside another user's)."""
    import fcntl
    LEASES.mkdir(parents=True, exist_ok=True)
    with open(LEASES.parent / "lease.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _lease_locked(owner)


def _lease_locked(owner: Path) -> int:
    for host in range(FIRST_BOARD_HOST, SUBNET.num_addresses - 1):
        path = LEASES / str(host)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            holder = Path(path.read_text().strip() or "/nonexistent")
            if holder == owner:
                return host
            fresh = time.time() - path.stat().st_mtime < 60  # its board may still be starting
            if (holder / "board.json").exists() and (fresh or _supervisor_alive(holder)):
                continue
            destroy_names(f"sbd-{host}", f"sbdv{host}")
            path.unlink(missing_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                continue
        os.write(fd, str(owner).encode())
        os.close(fd)
        return host
    raise LabNetworkError("no free address left in the lab subnet")


def _supervisor_alive(board_dir: Path) -> bool:
    """A lease is live while its board's supervisor runs (a killed test run leaves none)."""
    import json
    try:
        pid = json.loads((board_dir / "status.json").read_text())["supervisor_pid"]
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


def release(owner: Path) -> None:
    if not LEASES.exists():
        return
    for path in LEASES.iterdir():
        try:
            if Path(path.read_text().strip()) == owner:
                path.unlink()
        except OSError:
            pass


def holder(host: int) -> Path | None:
    """The board folder that leases host number `host`, or None when nobody does."""
    try:
        return Path((LEASES / str(host)).read_text().strip())
    except (OSError, ValueError):
        return None


def teardown(owner: Path, ns: str | None, host_if: str | None) -> None:
    """Destroys a board's namespace and link and gives its address back, but only while
    `owner` still leases that address: a stopped board's settings keep naming the
    namespace it had, and another board (this run's or anyone's on this machine) may
    lease that address since, and its namespace must survive this board's removal.
    Stale names left by a board that lost its lease are cleared by `create`."""
    host = ns.rsplit("-", 1)[-1] if ns else ""
    if host.isdigit() and holder(int(host)) == owner:
        destroy_names(ns, host_if)
    release(owner)


def create(owner: Path) -> BoardNetwork:
    """A namespace `sbd-<host>` with eth0 at 198.18.0.<host>, linked to the bridge."""
    if not namespaces_available():
        return BoardNetwork("loopback", "127.0.0.1", "255.0.0.0", "127.0.0.1", None, None)
    ensure_bridge()
    host = _lease(owner)
    ns, host_if, peer = f"sbd-{host}", f"sbdv{host}", f"sbdp{host}"
    destroy_names(ns, host_if)
    _ip("netns", "add", ns)
    _ip("link", "add", host_if, "type", "veth", "peer", "name", peer)
    _ip("link", "set", peer, "netns", ns)
    _ip("link", "set", host_if, "master", BRIDGE)
    _ip("link", "set", host_if, "up")
    address = str(SUBNET.network_address + host)
    _ip("-n", ns, "link", "set", peer, "name", "eth0")
    _ip("-n", ns, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    return BoardNetwork("netns", address, str(SUBNET.netmask), HOST_ADDRESS, ns, host_if)


def destroy_names(ns: str | None, host_if: str | None) -> None:
    if host_if:
        _ip("link", "del", host_if, check=False)
    if ns:
        _ip("netns", "del", ns, check=False)


def set_link(host_if: str, up: bool) -> None:
    """Cuts or restores a board's only link: a Wi-Fi outage seen from the board."""
    _ip("link", "set", host_if, "up" if up else "down")
