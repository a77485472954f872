# Trusted time: certificate validity means nothing on a device whose clock
# says 2000, and an ESP32 boots with its clock at 2000-01-01. The device sets
# its clock by SNTP (RFC 4330) from the NTP server of its settings and refuses
# to open a TLS connection while the clock is unset. Unlike the ESP32 build's
# ntptime, it takes only a server's answer to its own query: from the address
# it asked (a connected socket), echoing its random transmit time, in server
# mode, from a synchronised server (stratum 1 to 15, no alarm).
# NTP itself is not authenticated: whoever controls the path to the server
# still sets the clock (docs/mqtt.md, Limits).
# Provisions: ETSI EN 303 645 5.5-1 (best-practice cryptography needs valid
# certificates); OWASP ISVS 4.1.3 (certificate validation).
import os
import socket
import time

EARLIEST_YEAR = 2025  # no genuine clock reads earlier than this firmware
RESYNC_MS = 3600000  # a set clock is asked again at most once an hour
_NTP_2024 = 3913056000  # 2024-01-01 in NTP seconds: anything earlier wrapped in 2036
_synced_at = None  # ticks of this boot's last successful sync


def is_set():
    return time.gmtime()[0] >= EARLIEST_YEAR


def _ntp_to_epoch():
    # NTP counts from 1900; the ESP32 port's time from 2000 (the unix port's from 1970)
    return 3155673600 if time.gmtime(0)[0] == 2000 else 2208988800


def query(host, port=123, timeout_s=1):
    """Seconds since the port's epoch by SNTP, or OSError."""
    addr = socket.getaddrinfo(host, port)[0][-1]
    nonce = os.urandom(8)
    msg = bytearray(48)
    msg[0] = 0x23  # version 4, client
    msg[40:48] = nonce
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout_s)
        s.connect(addr)  # datagrams from anywhere else never reach this socket
        s.send(msg)
        reply = s.recv(48)
    finally:
        s.close()
    if len(reply) < 48 or reply[0] & 7 != 4 or reply[0] >> 6 == 3 or not 0 < reply[1] < 16:
        raise OSError("NTP: not a synchronised server's answer")
    if reply[24:32] != nonce:
        raise OSError("NTP: answer to another query")
    secs = int.from_bytes(reply[40:44], "big")
    if secs < _NTP_2024:
        secs += 1 << 32
    return secs - _ntp_to_epoch()


def _set(secs):
    import machine
    t = time.gmtime(secs)
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))


def sync(ntp_host=None, ntp_port=123):
    """Sets the clock from the NTP server (once a boot, then hourly); True when the clock is set."""
    global _synced_at
    now = time.ticks_ms()
    if ntp_host and (_synced_at is None or time.ticks_diff(now, _synced_at) > RESYNC_MS):
        try:
            _set(query(ntp_host, ntp_port))
            _synced_at = now
        except OSError:
            pass  # a clock set earlier (this boot, or kept by the RTC) still counts
    return is_set()


def asn1_now():
    """The current UTC time as "YYYYMMDDHHMMSSZ", comparable with der.cert_not_after()."""
    t = time.gmtime()
    return "%04d%02d%02d%02d%02d%02dZ" % (t[0], t[1], t[2], t[3], t[4], t[5])
