# Board support: `ntptime`, which the ESP32 build freezes from micropython-lib
# (ports/esp32/boards/manifest.py: require("bundle-networking")). The same
# API and behaviour, written for the emulator: `host` and `timeout` are set
# at run time, time() asks `host` on UDP port 123 and returns seconds since
# the port's epoch (2000), settime() sets the RTC from it, in UTC. As the
# original, it checks nothing in the answer (not its source, mode, stratum or
# the echo of the query): any 48-byte datagram sets the clock.
import socket
import struct

host = "pool.ntp.org"
timeout = 1

_NTP_2024 = 3913056000  # 2024-01-01 as NTP seconds: earlier ones wrapped in 2036
_NTP_TO_2000 = 3155673600  # 1900-01-01 to 2000-01-01


def time():
    query = bytearray(48)
    query[0] = 0x23  # version 4, client
    addr = socket.getaddrinfo(host, 123)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(query, addr)
        reply = s.recv(48)
    finally:
        s.close()
    secs = struct.unpack("!I", reply[40:44])[0]
    if secs < _NTP_2024:
        secs += 1 << 32
    return secs - _NTP_TO_2000


def settime():
    import machine
    import time as _time
    t = _time.gmtime(time())
    machine.RTC().datetime((t[0], t[1], t[2], t[6] + 1, t[3], t[4], t[5], 0))
