"""The lab's NTP server: chrony's chronyd, serving the host's clock to the boards.

A real ESP32 boots with its clock at 2000-01-01 and must set it by NTP before
a certificate's validity dates mean anything; so does the emulated board. The
boards reach the host only on the lab network, so the lab runs its own NTP
server there: on the bridge address, UDP 123 (the port NTP clients use), when
boards have network namespaces; on loopback, UDP `LOOPBACK_PORT`, without
(an unprivileged user cannot bind 123). It never sets the host's clock
(`chronyd -x`), serves it as a stratum-8 local reference, has no command
socket, and runs as the user who starts it (root or not).

One server serves every board on the machine, as the bridge does: the first
harness process that needs it starts it, later ones find it answering and
leave it be. It lives in `/run/sbd-lab/ntp/<address>-<port>` (as root) or a folder of the
user's own in the temporary directory, and keeps running like the bridge.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from sbd_harness.emulator import netlab
from sbd_harness.errors import SbdError

NTP_PORT = 123
LOOPBACK_PORT = 10123
STRATUM = 8


class NtpError(SbdError, RuntimeError):
    pass


def endpoint() -> tuple[str, int]:
    """Where the boards find the lab's NTP server: (address, UDP port)."""
    if netlab.namespaces_available():
        return netlab.HOST_ADDRESS, NTP_PORT
    return "127.0.0.1", LOOPBACK_PORT


def query(address: str, port: int, timeout: float = 0.5) -> float | None:
    """The server's time (Unix seconds) from one client query, or None if no valid answer came."""
    packet = bytearray(48)
    packet[0] = 0x23  # version 4, client
    nonce = os.urandom(8)
    packet[40:48] = nonce
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (address, port))
            reply, _ = s.recvfrom(512)
        except OSError:
            return None
    if len(reply) < 48 or reply[0] & 7 != 4 or reply[24:32] != nonce or not 0 < reply[1] < 16:
        return None
    secs, frac = struct.unpack("!II", reply[40:48])
    return secs - 2208988800 + frac / 2**32


def _state_dir(address: str, port: int) -> Path:
    """One folder per endpoint (the bridge's and loopback's servers can both run)."""
    if os.geteuid() == 0:
        d = Path("/run/sbd-lab/ntp") / f"{address}-{port}"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d
    d = Path(tempfile.gettempdir()) / f"sbd-ntp-{os.getuid()}" / f"{address}-{port}"
    for level in (d.parent, d):  # in a shared /tmp: only a folder of this user's own, closed to others
        level.mkdir(exist_ok=True, mode=0o700)
        st = level.lstat()
        if not level.is_dir() or level.is_symlink() or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise NtpError(f"{level} is not a folder of this user's own, closed to others: remove it "
                           "(someone else may have made it to give the lab's NTP server their configuration)")
    return d


def _config(address: str, port: int, folder: Path) -> str:
    return "\n".join([
        "# The sbd lab's NTP server (harness/sbd_harness/lab/ntp.py): the host's clock to the boards.",
        f"port {port}",
        f"bindaddress {address}",
        "allow all",  # bound to the lab address only: the boards and the host reach it, nothing else
        f"local stratum {STRATUM}",  # no upstream: the host's clock is the reference
        "cmdport 0",
        "bindcmdaddress /",  # no command socket either
        f"pidfile {folder / 'chronyd.pid'}",
        "",
    ])


def ensure_running(timeout: float = 10) -> tuple[str, int]:
    """Starts the lab's NTP server unless one answers already; returns its endpoint."""
    address, port = endpoint()
    if address == netlab.HOST_ADDRESS:
        netlab.ensure_bridge()
    if query(address, port) is not None:
        return address, port
    exe = shutil.which("chronyd") or ("/usr/sbin/chronyd" if Path("/usr/sbin/chronyd").exists() else None)
    if exe is None:
        raise NtpError("chrony is not installed: `make setup` installs it (apt-get install chrony); "
                       "the boards need the lab's NTP server to set their clocks")
    folder = _state_dir(address, port)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time on this machine
        if query(address, port) is not None:
            return address, port
        conf = folder / "chrony.conf"
        conf.write_text(_config(address, port, folder))
        log = open(folder / "chronyd.log", "ab")
        args = [exe, "-x", "-d", "-f", str(conf)] + (["-u", "root"] if os.geteuid() == 0 else ["-U"])
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if query(address, port) is not None:
                return address, port
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        tail = (folder / "chronyd.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise NtpError(f"the lab's NTP server (chronyd) did not answer on {address}:{port}: {' / '.join(tail)}")
