# The device's network behaviour, declared in one place: what it connects to
# and what it listens on. It listens on nothing: no socket is ever bound or
# listened on (no WebREPL, FTP, telnet or HTTP server); the serial console is
# locked once provisioned. It makes one outbound connection, mutual TLS over
# TCP to the MQTT broker of its settings, and, only where settings name an
# NTP server, NTP over UDP (with a DNS lookup when that server is a name).
# The harness writes the device's Manufacturer Usage Description (RFC 8520)
# from this module (`sbd mud`), and its checks compare what the device does
# on the network with it. The device announces its MUD URL in its birth
# message; the lab CA puts it in the device certificate (id-pe-mud-url).
# Provisions: ETSI EN 303 645 5.6-1, 5.6-5; NIST IR 8259A 4;
# EU CRA Annex I (2)(j).
from sbd import version

# Where the manufacturer publishes the MUD file: an https URL (RFC 8520
# section 3.1). A product's own build changes this base to its own server;
# ".invalid" (RFC 2606) says plainly that the reference has none.
MUD_BASE = "https://mud.example.invalid/"

LISTENS = ()  # (protocol, port) pairs: none, over TCP or UDP


def mud_url():
    return MUD_BASE + version.MODEL + ".json"


def _is_ipv4(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def outbound(settings):
    """What the device connects to with these settings (sbd.config):
    a list of (purpose, protocol, host, port, tls)."""
    out = [("mqtt", "tcp", settings["broker_addr"], settings["broker_port"], True)]
    ntp = settings.get("ntp_host")
    if ntp:
        if not _is_ipv4(ntp):
            out.append(("dns", "udp", "", 53, False))  # the resolver the network assigned
        out.append(("ntp", "udp", ntp, settings.get("ntp_port", 123), False))
    return out
