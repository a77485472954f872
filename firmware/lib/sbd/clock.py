# Trusted time: certificate validity means nothing on a device whose clock
# says 2000, and an ESP32 boots with its clock at 2000-01-01. The device sets
# its clock by SNTP (RFC 4330) from the NTP server of its settings and refuses
# to open a TLS connection while the clock is unset. The SNTP client itself
# is sbd.sntp, loaded only while the clock is being set.
# Provisions: ETSI EN 303 645 5.5-1 (best-practice cryptography needs valid
# certificates); OWASP ISVS 4.1.3 (certificate validation).
import time

EARLIEST_YEAR = 2025  # no genuine clock reads earlier than this firmware
RESYNC_MS = 3600000  # a set clock is asked again at most once an hour
_synced_at = None  # ticks of this boot's last successful sync


def is_set():
    return time.gmtime()[0] >= EARLIEST_YEAR


def _set(secs):
    import machine
    t = time.gmtime(secs)
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))


def sync(ntp_host=None, ntp_port=123):
    """Sets the clock from the NTP server (once a boot, then hourly); True when the clock is set."""
    global _synced_at
    now = time.ticks_ms()
    if ntp_host and (_synced_at is None or time.ticks_diff(now, _synced_at) > RESYNC_MS):
        import sys
        from sbd import sntp
        try:
            _set(sntp.query(ntp_host, ntp_port))
            _synced_at = now
        except OSError:
            pass  # a clock set earlier (this boot, or kept by the RTC) still counts
        finally:  # its code is freed once nothing holds it
            sys.modules.pop("sbd.sntp", None)
            import sbd
            delattr(sbd, "sntp")
    return is_set()


def asn1_now():
    """The current UTC time as "YYYYMMDDHHMMSSZ", comparable with der.cert_not_after()."""
    t = time.gmtime()
    return "%04d%02d%02d%02d%02d%02dZ" % (t[0], t[1], t[2], t[3], t[4], t[5])
