"""The emulated board's ESP-IDF network services: what the official MicroPython
ESP32 build runs beside the Python VM once Wi-Fi is up, whatever the firmware does.

Checked against MicroPython's ports/esp32 source (network_wlan.c, mpconfigport.h,
extmod/modnetwork.c): on IP_EVENT_STA_GOT_IP the port calls `mdns_init()` once per
power-on (a static `mdns_initialised` flag, kept over a soft reset) and, with
MICROPY_HW_ENABLE_MDNS_RESPONDER (1 by default), `mdns_hostname_set()` with the
name `network.hostname()` holds at that moment ("mpy-esp32" unless set). The
responder is an ESP-IDF task: Python cannot stop it. The station's DHCP client
(lwIP) holds UDP port 68 while it runs and ignores datagrams that are not replies
to it.

This process models both, as far as they matter for the attack surface: it binds
UDP 68 and drops what arrives (the lab assigns static addresses; no lease is
negotiated), and binds UDP 5353, joins 224.0.0.251, probes for and announces
`<hostname>.local` (RFC 6762 section 8) and answers A queries for it: to the group
for ordinary queries, to the sender for legacy unicast ones (source port not
5353, section 6.7). Nothing else is answered. The supervisor starts it in the
board's network namespace at the first GOT_IP after a power-on and stops it at
the next power-on.

Run as `python -m sbd_harness.emulator.idf_net ADDRESS HOSTNAME [--port N] [--no-dhcp]`.
"""
from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
DHCP_CLIENT_PORT = 68
TYPE_A, TYPE_ANY, CLASS_IN = 1, 255, 1
CACHE_FLUSH = 0x8000
TTL_HOST = 120       # RFC 6762 section 10: host records
LEGACY_TTL_MAX = 10  # section 6.7: at most 10 s in a legacy unicast answer


def encode_name(name: str) -> bytes:
    """A DNS name in wire format (no compression)."""
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def read_name(msg: bytes, at: int) -> tuple[str, int]:
    """A (possibly compressed) DNS name at `at`: the name and the offset after it."""
    labels, end, hops = [], None, 0
    while True:
        if at >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[at]
        if n & 0xC0 == 0xC0:
            if at + 1 >= len(msg) or hops > 16:
                raise ValueError("bad compression pointer")
            end = at + 2 if end is None else end
            at, hops = (n & 0x3F) << 8 | msg[at + 1], hops + 1
            continue
        if n & 0xC0:
            raise ValueError("bad label type")
        if n == 0:
            return ".".join(labels), (at + 1 if end is None else end)
        labels.append(msg[at + 1:at + 1 + n].decode("ascii", "replace"))
        at += 1 + n


def query(names: list[str], qtype: int = TYPE_A, ident: int = 0) -> bytes:
    """An mDNS/DNS query for `names`."""
    body = b"".join(encode_name(n) + struct.pack("!HH", qtype, CLASS_IN) for n in names)
    return struct.pack("!HHHHHH", ident, 0, len(names), 0, 0, 0) + body


def questions(msg: bytes) -> tuple[int, list[tuple[str, int, int]]]:
    """The ID and questions (name, type, class) of a query; ValueError for anything else."""
    if len(msg) < 12:
        raise ValueError("short message")
    ident, flags, qd = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or flags & 0x7800:  # a response, or an opcode other than QUERY
        raise ValueError("not a standard query")
    out, at = [], 12
    for _ in range(qd):
        name, at = read_name(msg, at)
        if at + 4 > len(msg):
            raise ValueError("short question")
        qtype, qclass = struct.unpack("!HH", msg[at:at + 4])
        out.append((name, qtype, qclass))
        at += 4
    return ident, out


def answer(ident: int, name: str, address: str, ttl: int, question: bool) -> bytes:
    """A response carrying the A record name -> address (echoing the question for legacy unicast)."""
    qd = encode_name(name) + struct.pack("!HH", TYPE_A, CLASS_IN) if question else b""
    rclass = CLASS_IN if question else CLASS_IN | CACHE_FLUSH
    rr = encode_name(name) + struct.pack("!HHIH", TYPE_A, rclass, ttl, 4) + socket.inet_aton(address)
    return struct.pack("!HHHHHH", ident, 0x8400, 1 if question else 0, 1, 0, 0) + qd + rr


def answers(msg: bytes) -> list[tuple[str, str]]:
    """(name, IPv4 address) of every A record in a response."""
    if len(msg) < 12:
        return []
    _, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    if not flags & 0x8000:
        return []
    at, out = 12, []
    try:
        for _ in range(qd):
            _, at = read_name(msg, at)
            at += 4
        for _ in range(an + ns + ar):
            name, at = read_name(msg, at)
            rtype, _, _, length = struct.unpack("!HHIH", msg[at:at + 10])
            data = msg[at + 10:at + 10 + length]
            if rtype == TYPE_A and length == 4 and len(data) == 4:
                out.append((name, socket.inet_ntoa(data)))
            at += 10 + length
    except (ValueError, struct.error):
        pass  # a malformed response: the records read so far
    return out


class Responder:
    """The mDNS responder of one board: A records for `<hostname>.local` only."""

    def __init__(self, address: str, hostname: str, port: int = MDNS_PORT, multicast: bool = True):
        self.address, self.port = address, port
        self.name = hostname.lower() + ".local"
        self.multicast = multicast
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("" if multicast else address, port))
        if multicast:
            iface = socket.inet_aton(address)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(MDNS_GROUP) + iface)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)

    def _to_group(self, data: bytes) -> None:
        if self.multicast:
            try:
                self.sock.sendto(data, (MDNS_GROUP, MDNS_PORT))
            except OSError:
                pass  # the link is down: the chip's next GOT_IP announces again

    def announce(self) -> None:
        """Three probes 250 ms apart, then an unsolicited answer (RFC 6762 sections 8.1, 8.3)."""
        for _ in range(3):
            self._to_group(query([self.name], TYPE_ANY))
            time.sleep(0.25)
        self._to_group(answer(0, self.name, self.address, TTL_HOST, False))

    def handle(self, msg: bytes, sender: tuple[str, int]) -> bytes | None:
        """The reply to one datagram, or None; the reply goes to the sender (legacy) or the group."""
        try:
            ident, qs = questions(msg)
        except (ValueError, struct.error):
            return None  # not a query: dropped, no reply, no ICMP (the port is bound)
        wanted = any(n.lower() == self.name and t in (TYPE_A, TYPE_ANY) and c & 0x7FFF == CLASS_IN
                     for n, t, c in qs)
        if not wanted:
            return None
        legacy = sender[1] != MDNS_PORT
        reply = answer(ident if legacy else 0, self.name, self.address,
                       LEGACY_TTL_MAX if legacy else TTL_HOST, legacy)
        if legacy:
            self.sock.sendto(reply, sender)
        else:
            self._to_group(reply)
        return reply

    def serve_forever(self) -> None:
        while True:
            msg, sender = self.sock.recvfrom(9000)
            self.handle(msg, sender)


def dhcp_client_port() -> socket.socket:
    """UDP 68, bound as lwIP's DHCP client binds it: what arrives there is read and dropped."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", DHCP_CLIENT_PORT))
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="idf_net")
    parser.add_argument("address")
    parser.add_argument("hostname")
    parser.add_argument("--port", type=int, default=MDNS_PORT)
    parser.add_argument("--no-dhcp", action="store_true", help="no DHCP client port (tests on shared loopback)")
    parser.add_argument("--unicast-only", action="store_true", help="no multicast group (tests on shared loopback)")
    args = parser.parse_args(argv)
    import threading
    if not args.no_dhcp:
        dhcp = dhcp_client_port()
        threading.Thread(target=lambda: [dhcp.recv(2048) for _ in iter(int, 1)], daemon=True).start()
    responder = Responder(args.address, args.hostname, args.port, multicast=not args.unicast_only)
    print("ready", flush=True)
    threading.Thread(target=responder.announce, daemon=True).start()
    responder.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
