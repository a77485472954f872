"""The board's network attack surface, seen from the lab: port scans of its
address and a record of the flows it opens, from its own link.

Stdlib only (sockets, epoll, AF_PACKET); scans and capture need the board to
have an address of its own (a network namespace, run as root).

- `scan_tcp`: a connect scan of every TCP port, many connections in flight.
  In the lab namespace nothing filters, so each port answers: SYN-ACK (open)
  or RST (closed). A port that does not answer is reported, never counted as
  closed.
- `probe_udp`: one datagram to each port. UDP has no handshake, so a probe
  shows a port *closed* only by the ICMP port-unreachable the board's stack
  sends back; a port *open* only if the service answers the probe. A service
  that keeps silent (most do, for an empty datagram) looks like a port whose
  ICMP was lost or filtered: "no answer" is all a probe can say. Kernels also
  rate-limit ICMP errors (Linux: about one per second per peer after a short
  burst), which would leave nearly every port unanswered; `icmp_unlimited`
  lifts that limit inside the board's namespace for the length of a probe.
  With no filtering and no limit, silence means something holds the port.
  Ports with a known service get a query it answers instead (`payloads`):
  5353 an mDNS query (`mdns_probe`), so the official ESP32 build's responder
  shows *open*, with its answer kept.
- `FlowWatch`: captures IPv4 frames on the host side of the board's veth
  link and records each flow the board starts (TCP SYN, UDP datagram): every
  attempt, including refused ones, which sampling `ss` would miss.
"""
from __future__ import annotations

import errno
import ipaddress
import selectors
import socket
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

ALL_PORTS = range(1, 65536)


@dataclass
class ScanResult:
    protocol: str
    address: str
    ports: int = 0
    open: list[int] = field(default_factory=list)
    closed: int = 0
    unanswered: list[int] = field(default_factory=list)
    seconds: float = 0.0
    replies: dict[int, bytes] = field(default_factory=dict)  # UDP: what each open port answered

    def summary(self) -> dict:
        return {"protocol": self.protocol, "address": self.address, "ports_probed": self.ports,
                "open": self.open, "closed": self.closed, "unanswered": self.unanswered[:50],
                "unanswered_count": len(self.unanswered), "seconds": round(self.seconds, 2),
                **({"replies": {p: r[:64].hex() for p, r in self.replies.items()}} if self.replies else {})}


# What one probe of one port came to.
OPEN, CLOSED, SILENT = "open", "closed", "silent"
# start(port): a probe under way (its socket, the selector event that ends it),
# or the outcome at once; finish(socket): the outcome of a probe that is ready.
Start = Callable[[int], "tuple[socket.socket, int] | str"]
Finish = Callable[[socket.socket], str]


def _probe_pass(ports: Iterable[int], in_flight: int, timeout: float, result: ScanResult,
                start: Start, finish: Finish) -> list[int]:
    """One pass of non-blocking probes, `in_flight` at a time; returns the ports
    whose probe had no outcome within `timeout`."""
    sel = selectors.DefaultSelector()
    todo = iter(ports)
    live: dict[int, tuple[socket.socket, int, float]] = {}
    silent: list[int] = []

    def record(port: int, outcome: str) -> None:
        if outcome == OPEN:
            result.open.append(port)
        elif outcome == CLOSED:
            result.closed += 1
        else:
            silent.append(port)

    try:
        while True:
            while len(live) < in_flight:
                port = next(todo, None)
                if port is None:
                    break
                started = start(port)
                if isinstance(started, str):
                    record(port, started)
                    continue
                sock, event = started
                sel.register(sock, event, port)
                live[sock.fileno()] = (sock, port, time.monotonic() + timeout)
            if not live:
                return silent
            for key, _ in sel.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                sel.unregister(sock)
                del live[sock.fileno()]
                record(key.data, finish(sock))
                sock.close()
            now = time.monotonic()
            for fd, (sock, port, deadline) in list(live.items()):
                if now > deadline:
                    sel.unregister(sock)
                    del live[fd]
                    silent.append(port)
                    sock.close()
    finally:
        for sock, _, _ in live.values():
            sock.close()
        sel.close()


def _scan(protocol: str, address: str, ports: Iterable[int], in_flight: int, retry_in_flight: int,
          timeout: float, retries: int, start: Start, finish: Finish,
          result: ScanResult | None = None, expected_silent: Iterable[int] = ()) -> ScanResult:
    """A first pass, then the silent ports again, fewer at a time and more patiently; a port in
    `expected_silent` (a listener known to keep quiet, e.g. a DHCP client) is not tried again."""
    ports = list(ports)
    result = result or ScanResult(protocol, address)
    result.ports = len(ports)
    started = time.monotonic()
    silent = _probe_pass(ports, in_flight, timeout, result, start, finish)
    quiet = [p for p in silent if p in set(expected_silent)]
    silent = [p for p in silent if p not in quiet]
    for attempt in range(retries):
        if not silent:
            break
        silent = _probe_pass(silent, retry_in_flight, timeout * (attempt + 3), result, start, finish)
    result.unanswered = sorted(silent + quiet)
    result.open.sort()
    result.seconds = time.monotonic() - started
    return result


def _tcp_outcome(sock: socket.socket, err: int) -> str:
    if err == 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, no TIME_WAIT
        return OPEN
    return CLOSED if err == errno.ECONNREFUSED else SILENT


def scan_tcp(address: str, ports: Iterable[int] = ALL_PORTS, in_flight: int = 512,
             timeout: float = 1.0, retries: int = 2) -> ScanResult:
    """Connect scan: SYN-ACK is open, RST closed, nothing at all silent."""
    def start(port: int) -> tuple[socket.socket, int] | str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((address, port))
        if err == errno.EINPROGRESS:
            return sock, selectors.EVENT_WRITE
        outcome = _tcp_outcome(sock, err)
        sock.close()
        return outcome

    def finish(sock: socket.socket) -> str:
        return _tcp_outcome(sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    return _scan("tcp", address, ports, in_flight, 64, timeout, retries, start, finish)


def mdns_probe(names: Iterable[str]) -> bytes:
    """The probe for UDP 5353: a legacy-unicast mDNS query (RFC 6762 section 6.7)
    for the A records of `names`, which a responder answers to the sender. An
    empty datagram gets nothing from it: the port would only look silent."""
    from sbd_harness.emulator.idf_net import query
    return query(sorted(set(names)), ident=0x5BD0)


def mdns_names(hostnames: Iterable[str]) -> list[str]:
    """`<name>.local` for each hostname, and the names the official ESP32 build
    answers to when the firmware sets none (MICROPY_PY_NETWORK_HOSTNAME_DEFAULT)."""
    defaults = ("mpy-esp32", "mpy-esp32s2", "mpy-esp32s3", "mpy-esp32c3", "mpy-esp32c6")
    return [h.lower() + ".local" for h in (*hostnames, *defaults)]


def probe_udp(address: str, ports: Iterable[int] = ALL_PORTS, in_flight: int = 256,
              timeout: float = 1.0, retries: int = 2, payloads: dict[int, bytes] | None = None,
              expected_silent: Iterable[int] = ()) -> ScanResult:
    """A datagram to each port: closed (ICMP port unreachable), open (an answer),
    or unanswered (open|filtered: a silent service, or a lost ICMP). `payloads`:
    what to send to particular ports (a query their service answers, e.g.
    `mdns_probe` for 5353), two bytes of CR LF elsewhere. The answers are kept
    in `ScanResult.replies`. `expected_silent`: ports not probed again when silent
    (a declared listener that drops what it does not expect, e.g. the DHCP client)."""
    payloads = payloads or {}

    def start(port: int) -> tuple[socket.socket, int] | str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((address, port))  # a connected socket receives the ICMP error
        try:
            sock.send(payloads.get(port, b"\r\n"))
        except ConnectionRefusedError:
            sock.close()
            return CLOSED
        return sock, selectors.EVENT_READ

    def finish(sock: socket.socket) -> str:
        try:
            port = sock.getpeername()[1]
            result.replies[port] = sock.recv(2048)
            return OPEN  # something answered the probe
        except ConnectionRefusedError:
            return CLOSED
        except OSError:
            return SILENT

    result = ScanResult("udp", address)
    return _scan("udp", address, ports, in_flight, 16, timeout, retries, start, finish, result, expected_silent)


def _netns(netns: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, timeout=20)


ICMP_LIMITS = {"net.ipv4.icmp_ratelimit": "0", "net.ipv4.icmp_msgs_per_sec": "1000000",
               "net.ipv4.icmp_msgs_burst": "1000000"}


@contextmanager
def icmp_unlimited(netns: str) -> Iterator[dict[str, str]]:
    """Lifts the ICMP error rate limits inside the board's namespace (the lab's,
    not the firmware's), then restores them. Yields the settings it changed."""
    # One `sysctl` for all the reads and one for all the writes (each a process in the namespace);
    # key by key only where the kernel lacks one of them.
    got = _netns(netns, "sysctl", *ICMP_LIMITS).stdout
    current = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in got.splitlines()) if _}
    before: dict[str, str] = {}
    wanted = {k: v for k, v in ICMP_LIMITS.items() if k in current}
    if wanted and _netns(netns, "sysctl", "-qw", *(f"{k}={v}" for k, v in wanted.items())).returncode == 0:
        before = {k: current[k] for k in wanted}
    else:
        for key, value in wanted.items():
            if _netns(netns, "sysctl", "-qw", f"{key}={value}").returncode == 0:
                before[key] = current[key]
    try:
        yield before
    finally:
        if before:
            _netns(netns, "sysctl", "-qw", *(f"{k}={v}" for k, v in before.items()))


def namespace_sockets(netns: str) -> list[str]:
    """Listening TCP and bound UDP sockets inside the namespace, as `ss` lists
    them (with their process): the inside view that backs up the scans."""
    proc = _netns(netns, "ss", "-H", "-tulnp")
    return [" ".join(line.split()) for line in proc.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Flow:
    protocol: str   # "tcp" or "udp"
    address: str    # the peer the board sent to
    port: int


class FlowWatch:
    """Records the flows `board_address` starts, captured on the host side
    (`interface`) of its only link. Root only (AF_PACKET)."""

    ETH_P_ALL = 0x0003  # a bridge port's frames reach only catch-all taps, not per-protocol ones

    def __init__(self, interface: str, board_address: str):
        self.interface = interface
        self.board = socket.inet_aton(board_address)
        self.flows: dict[Flow, int] = {}
        self.frames = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "FlowWatch":
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.ETH_P_ALL))
        sock.bind((self.interface, self.ETH_P_ALL))
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if self._sock:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.frames += 1
            flow = self.parse(frame, self.board)
            if flow is not None:
                self.flows[flow] = self.flows.get(flow, 0) + 1

    @staticmethod
    def parse(frame: bytes, board: bytes) -> Flow | None:
        """The flow a frame starts, if the board sent it: a TCP SYN (not SYN-ACK)
        or any UDP datagram. Ethernet II + IPv4 only; fragments after the first are skipped."""
        ip = frame[14:]
        if frame[12:14] != b"\x08\x00" or len(ip) < 20 or ip[0] >> 4 != 4 or ip[12:16] != board:
            return None
        if struct.unpack("!H", ip[6:8])[0] & 0x1FFF:
            return None
        header = (ip[0] & 0x0F) * 4
        proto, payload, dst = ip[9], ip[header:], socket.inet_ntoa(ip[16:20])
        if proto == 6 and len(payload) >= 14:
            flags = payload[13]
            if flags & 0x02 and not flags & 0x10:
                return Flow("tcp", dst, struct.unpack("!H", payload[2:4])[0])
        elif proto == 17 and len(payload) >= 8:
            return Flow("udp", dst, struct.unpack("!H", payload[2:4])[0])
        return None

    def started(self) -> list[dict]:
        return [{"protocol": f.protocol, "address": f.address, "port": f.port, "packets": n}
                for f, n in sorted(self.flows.items(), key=lambda kv: (kv[0].protocol, kv[0].address, kv[0].port))]


def local_network(address: str, netmask: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
