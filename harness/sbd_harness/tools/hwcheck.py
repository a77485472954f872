"""`sbd hwcheck`: the figures the emulated board can only estimate, measured
once on a real ESP32 (docs/emulated-board.md, "What a real board measures").

It talks to the board only through the serial-port path (SerialBoard) and the
network, as for any real board; `make test` runs it against an emulated board
through that same path (tests/board/test_hwcheck.py). Figures that need the
REPL (P-256, heap, round trips) are measured on an unlocked board and given
as null, with the reason, on a locked one.
"""
from __future__ import annotations

import socket
import struct
import time
from typing import Any

from sbd_harness.boards.base import BoardError
from sbd_harness.boards.serial_board import SerialBoard
from sbd_harness.lab.surface import probe_udp, scan_tcp

MDNS_PORT = 5353
MDNS_NAMES = ("_services._dns-sd._udp.local", "mpy-esp32.local")  # the official build's default hostname

P256_VERIFY = """
import time, hashlib
from sbd import p256
sk, pk = p256.generate_keypair()
d = hashlib.sha256(b'hwcheck').digest()
sig = p256.sign(sk, d)
t = []
for i in range({n}):
    t0 = time.ticks_us(); ok = p256.verify(pk, d, sig); t.append(time.ticks_diff(time.ticks_us(), t0))
    assert ok
t.sort()
print(t[len(t) // 2])
"""

HEAP = """
import gc
gc.collect()
print(gc.mem_free(), gc.mem_alloc())
"""

# Connects as the locked firmware does (sbd.link), when the board has settings.
HEAP_CONNECTED = """
import gc, time
from sbd import config
s = config.load()
if s is None:
    print('NOCONFIG')
else:
    from sbd.link import Link
    l = Link(s, lambda line: None)
    d = time.ticks_add(time.ticks_ms(), {timeout_ms})
    while l.client is None and time.ticks_diff(d, time.ticks_ms()) > 0:
        l.tick()
        time.sleep_ms(50)
    gc.collect()
    print('CONNECTED' if l.client else 'NOTCONNECTED', gc.mem_free())
    if l.client:
        l.client.disconnect()
"""

ADDRESS = """
import network
print(network.WLAN(network.STA_IF).ifconfig()[0])
"""


def boot(board: SerialBoard, timeout: float) -> dict[str, Any]:
    """A hard reset until the firmware's boot line: how long, and what it said."""
    capture = board.capture_boot("hard", timeout=timeout)
    return {"boot_s": round(capture.elapsed_s, 3), "boot_line": capture.boot_line,
            "rst_line_seen": "rst:0x" in capture.transcript}


def p256_verify_ms(board: SerialBoard, runs: int) -> float:
    """Median ms of one sbd.p256.verify() on the device itself."""
    return int(board.exec(P256_VERIFY.format(n=runs), timeout=60 + runs * 30).split()[-1]) / 1000


def heap(board: SerialBoard, connect_timeout_s: float) -> dict[str, Any]:
    """Free heap at the REPL, and after the firmware's own connect when the board has settings."""
    free, used = (int(x) for x in board.exec(HEAP).split()[-2:])
    out: dict[str, Any] = {"idle_free_bytes": free, "idle_used_bytes": used, "connected_free_bytes": None}
    said = board.exec(HEAP_CONNECTED.format(timeout_ms=int(connect_timeout_s * 1000)),
                      timeout=connect_timeout_s + 30).split()
    if said and said[0] == "CONNECTED":
        out["connected_free_bytes"] = int(said[1])
    else:
        out["connected_note"] = {"NOCONFIG": "not configured: provision the board with a broker first",
                                 "NOTCONNECTED": "did not reach the broker in time"}.get(said[0] if said else "",
                                                                                        " ".join(said))
    return out


def round_trips(board: SerialBoard, n: int) -> dict[str, int]:
    """n raw-REPL commands in one session, each echoing its number: answers that never came or came wrong."""
    answered = wrong = 0
    with board.session() as t:
        for i in range(n):
            try:
                out, err = t.exec_raw(f"print({i})", timeout=5)
            except Exception:  # noqa: BLE001 - a lost command is what is counted
                continue
            if out.strip() == str(i).encode() and not err:
                answered += 1
            else:
                wrong += 1
    return {"sent": n, "answered": answered, "wrong": wrong, "lost": n - answered - wrong}


def ctrl_c_storm(board: SerialBoard, resets: int, seconds: float) -> dict[str, Any]:
    """Resets with Ctrl-C written every 10 ms through the boot: how often a REPL prompt came up."""
    repl = 0
    for _ in range(resets):
        start = time.monotonic()
        if board.native_usb:
            board.native_usb_reset("hard")
            port = board.reopen_port(start + seconds + 20)
        else:
            port = board.open_port()
            port.reset_input_buffer()
            board.trigger_reset(port, "hard")
        seen = b""
        with port:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                port.write(b"\x03")
                seen += port.read(port.in_waiting or 1)
                time.sleep(0.01)
            port.write(b"\r\n")
            time.sleep(0.3)
            seen += port.read(port.in_waiting or 1)
        after = seen[seen.rfind(b"rst:0x"):] if b"rst:0x" in seen else seen
        if b">>> " in after or b"raw REPL" in after:
            repl += 1
    return {"resets": resets, "repl_prompts": repl, "seconds_each": seconds}


def _mdns_query(name: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    qtype = 12 if name.startswith("_") else 1  # PTR for the service list, A for the host
    return struct.pack(">HHHHHH", 0, 0, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 0x8001)


def mdns_probe(address: str, timeout: float = 2.0) -> dict[str, Any]:
    """Unicast mDNS queries to UDP 5353 (RFC 6762 section 5.5: answered by unicast):
    does a responder answer, and with how many records."""
    answers = []
    for name in MDNS_NAMES:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((address, MDNS_PORT))
            try:
                sock.send(_mdns_query(name))
                reply = sock.recv(4096)
            except ConnectionRefusedError:
                answers.append({"name": name, "answer": "closed"})
                continue
            except OSError:
                answers.append({"name": name, "answer": None})
                continue
            count = struct.unpack(">H", reply[6:8])[0] if len(reply) >= 12 else 0
            answers.append({"name": name, "answer": "records", "answer_records": count})
    probe = probe_udp(address, [MDNS_PORT]).summary()
    return {"queries": answers, "udp_probe": probe,
            "responder": any(a["answer"] == "records" for a in answers)}


def run(board: SerialBoard, address: str | None = None, round_trip_count: int = 200, storm_resets: int = 3,
        p256_runs: int = 3, tcp_ports: range = range(1, 65536), boot_timeout: float = 30,
        connect_timeout_s: float = 60) -> dict[str, Any]:
    """Every figure, as one JSON-ready dict."""
    out: dict[str, Any] = {"port": board.port, "chip": board.chip, "console": board.console}
    out["boot"] = boot(board, boot_timeout)
    line = out["boot"]["boot_line"] or {}
    locked = (line.get("security") or {}).get("console") == "locked"
    out["console_locked"] = locked
    if locked:
        reason = "console locked: unlock it (signed unlock_console) for the REPL figures"
        out.update({"p256_verify_ms": None, "heap": None, "round_trips": None, "skipped": reason})
    else:
        out["p256_verify_ms"] = p256_verify_ms(board, p256_runs)
        out["heap"] = heap(board, connect_timeout_s)
        out["round_trips"] = round_trips(board, round_trip_count)
        if address is None:
            address = board.exec(ADDRESS).split()[-1]
            if address == "0.0.0.0":  # not associated: no address to probe
                address = None
    seconds = max(2.0, out["boot"]["boot_s"] * 1.5)
    out["ctrl_c_storm"] = ctrl_c_storm(board, storm_resets, seconds)
    if address is None:
        out["network"] = None
        out["network_note"] = "give --address (the board's IP) for the mDNS probe and the TCP scan"
    else:
        out["network"] = {"address": address, "mdns": mdns_probe(address),
                          "tcp": scan_tcp(address, tcp_ports).summary()}
    return out


def parse_ports(text: str) -> range:
    """"1-1024" -> range(1, 1025)."""
    try:
        lo, _, hi = text.partition("-")
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise BoardError(f"bad port range {text!r}: use FIRST-LAST, e.g. 1-65535")
    if not 1 <= first <= last <= 65535:
        raise BoardError(f"bad port range {text!r}: ports are 1 to 65535")
    return range(first, last + 1)
