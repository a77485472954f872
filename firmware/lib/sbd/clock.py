# Trusted time: certificate validity means nothing on a device whose clock
# says 2000. The device sets its clock (NTP on a real board) and refuses to
# open a TLS connection while the clock is unset.
# Provisions: ETSI EN 303 645 5.5-1 (best-practice cryptography needs valid
# certificates); OWASP ISVS 4.1.3 (certificate validation).
import time

EARLIEST_YEAR = 2025  # no genuine clock reads earlier than this firmware


def is_set():
    return time.gmtime()[0] >= EARLIEST_YEAR


def sync(ntp_host=None):
    """Sets the clock from NTP where the firmware has ntptime (ESP32 builds do)."""
    if ntp_host:
        try:
            import ntptime
        except ImportError:
            return is_set()
        ntptime.host = ntp_host
        try:
            ntptime.settime()
        except OSError:
            pass
    return is_set()


def asn1_now():
    """The current UTC time as "YYYYMMDDHHMMSSZ", comparable with der.cert_not_after()."""
    t = time.gmtime()
    return "%04d%02d%02d%02d%02d%02dZ" % (t[0], t[1], t[2], t[3], t[4], t[5])
