"""`make bench`, the device on the network: MQTT connect time,
telemetry throughput and the heap a connection needs (docs/benchmarks.md).

One emulated board, provisioned by a throw-away lab CA, against the lab's
real mosquitto (`Broker`). The connect figures come from the firmware's own
`sbd.tls` and `sbd.mqtt` driven through the raw REPL of the provisioned but
unlocked board, timed on the board; the throughput from the locked firmware
(`sbd.link`) draining its flash outbox, counted by a subscriber on the host.
"""
from __future__ import annotations

import json
import threading
import time

from sbd_harness.tools.bench_lab import IDLE_HEAP, boot_with_heap, fresh_lab, lock_console, median, smallest_heap, unlock_console
from sbd_harness.boards.base import BoardError
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.lab.broker import BROKER_HOSTNAME, Broker
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import lab_settings, provision
from sbd_harness.lab.watch import Watcher

BOARD_NAME = "bench-net"
# As sbd.link: the client the firmware makes once, at start-up.
KEEPALIVE_S = 30
MAX_PACKET = 1536
# Telemetry every hour: during a drain the firmware samples once (at boot),
# so the backlog is what it sends.
QUIET_TELEMETRY_S = 3600
BACKLOG = 300          # queued messages per drain: ~14 KiB of the 64 KiB outbox
HEAP_RESOLUTION = 1024


# -- mqtt_connect_ms ----------------------------------------------------------------
CONNECT_TIMING = """
import time
from sbd import tls, device
from sbd.mqtt import MQTTClient
c = MQTTClient(device.device_id(), keepalive={keepalive}, max_packet={max_packet})
ts = []
for i in range({n}):
    t0 = time.ticks_us()
    s = tls.connect({addr!r}, {port}, {host!r})
    c.connect(s, clean_session=True)
    ts.append(time.ticks_diff(time.ticks_us(), t0))
    c.disconnect()
print(' '.join(str(t) for t in ts))
"""


def mqtt_connect_ms(board: EmulatedBoard, broker: Broker, runs: int) -> float:
    """tls.connect() (TCP connect, mutual-TLS handshake, the firmware's own
    certificate date check) then MQTTClient.connect() (CONNECT, CONNACK),
    timed with time.ticks_us() on the board. Median of `runs` samples."""
    code = CONNECT_TIMING.format(n=runs, addr=broker.address, port=broker.port, host=BROKER_HOSTNAME,
                                 keepalive=KEEPALIVE_S, max_packet=MAX_PACKET)
    out = board.exec(code, timeout=30 + runs * 5).split()
    return median([int(us) / 1000 for us in out])


# -- heap_high_water_connect_bytes ---------------------------------------------------------
# As little code as possible around the operation: the raw REPL compiles it in
# the heap too. A MemoryError is an Exception (tls.connect reports one during
# the handshake as a TLSError with the same text).
HEAP_TRIAL = """
import time
from sbd import tls, device
from sbd.mqtt import MQTTClient
try:
    i = device.device_id()
    c = MQTTClient(i, keepalive={keepalive}, max_packet={max_packet})
    c.connect(tls.connect({addr!r}, {port}, {host!r}), clean_session=True)
    p = c.publish('devices/' + i + '/telemetry', b'{{"seq": 0, "data": {{"uptime_s": 0, "heap_free": 0}}}}', qos=1)
    d = time.ticks_add(time.ticks_ms(), 5000)
    while p in c.pending and time.ticks_diff(d, time.ticks_ms()) > 0:
        c.poll(100)
    r = 'OK' if p not in c.pending else 'FAIL no PUBACK'
    c.disconnect()
except Exception as e:
    r = 'FAIL %s %s' % (type(e).__name__, e)
print(r)
"""
def set_clock(board: EmulatedBoard) -> None:
    """The board's clock starts in 2000 at each power-on, as an ESP32's: set it to the
    host's UTC time (machine.RTC), or sbd.tls refuses to connect. Not by NTP, whose
    client would count in the heap measured here; the RTC keeps it across soft resets."""
    import datetime
    t = datetime.datetime.now(datetime.timezone.utc)
    board.exec(f"import machine\nmachine.RTC().datetime(({t.year}, {t.month}, {t.day}, 0, "
               f"{t.hour}, {t.minute}, {t.second}, 0))", timeout=30)


def _heap_trial(board: EmulatedBoard, code: str, heap_bytes: int) -> tuple[bool, str]:
    """From a fresh boot with `heap_bytes` of heap: did the connect, CONNACK
    and a PUBACKed publish succeed? (and what the board said)."""
    # A board that chatters forever (a reboot loop) would keep mpremote
    # reading: past the deadline, the board is powered off under it.
    watchdog = threading.Timer(60, board.stop)
    watchdog.start()
    try:
        boot_with_heap(board, heap_bytes)
        set_clock(board)
        out = board.exec(code, timeout=30).strip()
    except Exception as exc:  # noqa: too small to boot, or to take the REPL's input
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return False, f"board: {lines[-1][:160]}"
    finally:
        watchdog.cancel()
    return out == "OK", out[-160:]


def _out_of_heap(said: str) -> bool:
    """A failure that reads as running out of heap: a MemoryError, or a board
    that could not boot or take the REPL's input."""
    return "memory allocation failed" in said or "MemoryError" in said or said.startswith("board:")


def heap_high_water_connect_bytes(board: EmulatedBoard, broker: Broker,
                                  resolution: int = HEAP_RESOLUTION) -> tuple[int, dict]:
    """The smallest -X heapsize (a multiple of `resolution`) of the board's
    MicroPython in which, from a fresh boot of the provisioned, unlocked
    board, tls.connect + MQTTClient.connect + publish(qos=1) up to its PUBACK
    succeeds. Bisection, each trial a new boot; a failure that does not read
    as out-of-heap is tried again once; the result is tried once more (and
    raised a step at a time if that fails). Returns it and details."""
    code = HEAP_TRIAL.format(addr=broker.address, port=broker.port, host=BROKER_HOSTNAME,
                             keepalive=KEEPALIVE_S, max_packet=MAX_PACKET)
    full = board.state.load()["heap_bytes"]
    boot_with_heap(board, full)
    set_clock(board)
    # What a fresh boot holds: below it nothing more fits, a failing bound.
    idle = int(board.exec(IDLE_HEAP).split()[-1])
    said = board.exec(code, timeout=30).strip()
    if said != "OK":
        raise BoardError(f"connect + publish fails even with the board's full heap ({full} bytes): {said}")
    size, trials, failure = smallest_heap(idle, full, resolution, lambda heap: _heap_trial(board, code, heap),
                                          _out_of_heap, "connect + publish")
    boot_with_heap(board, full)
    detail = {"board_heap_bytes": full, "idle_heap_bytes": idle, "resolution_bytes": resolution,
              "trials": trials, "failure_below": failure}
    return size, detail


# -- telemetry_msgs_per_s -------------------------------------------------------------------
FILL_OUTBOX = """
import gc, json, time
from sbd.outbox import Outbox
o = Outbox('/data/outbox')
for i in range({n}):
    o.put(json.dumps({{"uptime_s": time.ticks_ms() // 1000, "heap_free": gc.mem_free()}}).encode())
s = o.stats()
print(s['acked'] + 1, s['next_seq'] - 1, s['pending'])
"""


def _drain_rate(board: EmulatedBoard, watcher: Watcher, device_id: str, backlog: int) -> float:
    """Queues `backlog` readings in the outbox, locks the board and times the
    drain at the subscriber: (messages - 1) / (last arrival - first arrival)."""
    first, last, pending = (int(x) for x in board.exec(FILL_OUTBOX.format(n=backlog), timeout=120).split()[-3:])
    if pending != last - first + 1 or pending < backlog:
        raise BoardError(f"the outbox holds {pending} messages, {first}..{last}, after queuing {backlog}")
    topic = f"devices/{device_id}/telemetry"

    def queued(m) -> bool:
        body = m.json()
        seq = body.get("seq") if isinstance(body, dict) else None
        return m.topic == topic and isinstance(seq, int) and first <= seq <= last

    lock_console(board)
    arrivals: dict[int, float] = {}
    deadline = time.monotonic() + 60 + pending / 5
    while len(arrivals) < pending:
        m = watcher.wait_for(queued, deadline - time.monotonic())
        if m is None:
            raise BoardError(f"{board.name} delivered {len(arrivals)} of {pending} queued messages in time")
        arrivals.setdefault(m.json()["seq"], m.at)  # a QoS 1 duplicate counts once
    times = sorted(arrivals.values())
    return (len(times) - 1) / (times[-1] - times[0])


def telemetry_msgs_per_s(board: EmulatedBoard, broker: Broker, ca: LabCA, device_id: str,
                         runs: int, backlog: int = BACKLOG) -> tuple[float, list[float]]:
    """Median over `runs` drains (queue, lock, drain, then the signed
    unlock_console for the next one), and every drain's rate."""
    samples = []
    with Watcher(broker, f"devices/{device_id}/#") as w:
        for i in range(runs):
            samples.append(_drain_rate(board, w, device_id, backlog))
            if i < runs - 1:
                unlock_console(board, w, ca, device_id)
    return median(samples), [round(r, 1) for r in samples]


# -- all three ------------------------------------------------------------------------------
def run(bundle: FirmwareBundle, runs: int) -> tuple[dict, dict]:
    """The three figures, and details for `_meta`, from one new board
    (`bench-net`) and a throw-away lab CA and broker."""
    with fresh_lab(BOARD_NAME, bundle) as (_, ca, board):
        with Broker(ca) as broker:
            settings = dict(lab_settings(board, broker.port), telemetry_s=QUIET_TELEMETRY_S)
            device_id = provision(board, ca, lock=False, settings=settings).device_id
            set_clock(board)
            connect = mqtt_connect_ms(board, broker, runs * 4)
            high_water, heap = heap_high_water_connect_bytes(board, broker)
            # Last: it locks the board.
            rate, drains = telemetry_msgs_per_s(board, broker, ca, device_id, runs)
    results = {"mqtt_connect_ms": connect, "telemetry_msgs_per_s": rate,
               "heap_high_water_connect_bytes": high_water}
    meta = {"telemetry_drain": {"backlog": BACKLOG, "msgs_per_s": drains}, "heap_bisection": heap}
    return results, meta


if __name__ == "__main__":  # python -m sbd_harness.tools.bench_net [runs]: these three alone
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    figures, details = run(FirmwareBundle.from_dir(), n)
    print(json.dumps({**figures, "_meta": details}, indent=2))
