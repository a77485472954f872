# The device's SNTP client (RFC 4330), loaded by sbd.clock only when it asks
# for the time and unloaded after, so its code takes no heap in between.
# Unlike the ESP32 build's ntptime, it takes only a server's answer to its own
# query: from the address it asked (a connected socket), echoing its random
# transmit time, in server mode, from a synchronised server (stratum 1 to 15,
# no alarm). NTP itself is not authenticated (docs/mqtt.md, Limits).
# Provisions: ETSI EN 303 645 5.5-1; OWASP ISVS 4.1.3.
import os
import socket
import time

_NTP_2024 = 3913056000  # 2024-01-01 in NTP seconds: anything earlier wrapped in 2036


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
