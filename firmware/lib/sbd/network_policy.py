# The device's network behaviour, declared in one place: what it connects to
# and what it listens on. The firmware itself binds and listens on nothing (no
# WebREPL, FTP, telnet or HTTP server); the serial console is locked once
# provisioned. The official MicroPython ESP32 build does listen, below Python:
# once Wi-Fi has an address, ESP-IDF's mDNS responder answers on UDP 5353 for
# HOSTNAME + ".local" (MICROPY_HW_ENABLE_MDNS_RESPONDER, on by default; Python
# cannot stop it), and the station's DHCP client holds UDP 68. A build of the
# manufacturer's own removes the responder (docs/attack-surface.md). The device
# makes one outbound connection, mutual TLS over TCP to the MQTT broker of its
# settings, and, only where settings name an NTP server, NTP over UDP (with a
# DNS lookup when that server is a name); the port's DHCP and mDNS send to the
# local network. The harness does not trust this module: its checks hold the
# device to the reviewed policy in boards/network-policy.json (never running
# this file on the host), which must say the same. The device announces its
# MUD URL in its birth message; the lab CA puts it in the device certificate
# (id-pe-mud-url). Of the radio interfaces the product uses the Wi-Fi station
# alone: the access point and Bluetooth stay off (the port starts neither by
# itself), and the birth message reports all three as the port sees them.
# Provisions: ETSI EN 303 645 5.6-1, 5.6-5; NIST IR 8259A 4;
# EU CRA Annex I (2)(j).
from sbd import version

# Where the manufacturer publishes the MUD file: an https URL (RFC 8520
# section 3.1). A product's own build changes this base to its own server;
# ".invalid" (RFC 2606) says plainly that the reference has none.
MUD_BASE = "https://mud.example.invalid/"

# (protocol, port) pairs: not the firmware's own, the official build's.
LISTENS = (("udp", 5353), ("udp", 68))  # mDNS responder, DHCP client


def hostname(device_id):
    # The name the mDNS responder answers for and DHCP sends: one per device
    # (not the port's "mpy-esp32", which every board shares and which names the
    # runtime). Set before Wi-Fi connects: the port takes it at the first GOT_IP.
    return "sbd-" + device_id


def interfaces():
    """Which radio interfaces are on now, as the port reports them (not as
    intended): WLAN.active() of the station and the access point, and
    BLE().active(), which only asks and starts nothing."""
    import network
    on = {"wifi_sta": network.WLAN(network.STA_IF).active(), "wifi_ap": network.WLAN(network.AP_IF).active()}
    try:
        import bluetooth
    except ImportError:  # a build without Bluetooth: nothing to turn on
        on["bluetooth"] = False
    else:
        on["bluetooth"] = bluetooth.BLE().active()
    return on


def mud_url():
    return MUD_BASE + version.MODEL + ".json"


def _is_ipv4(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def outbound(settings):
    """What the device connects to with these settings (sbd.config):
    a list of (purpose, protocol, host, port, tls)."""
    out = [("mqtt", "tcp", settings["broker_addr"], settings["broker_port"], True),
           ("dhcp", "udp", "", 67, False),  # to the local network's DHCP server
           ("mdns", "udp", "224.0.0.251", 5353, False)]  # probes, announcements, answers
    ntp = settings.get("ntp_host")
    if ntp:
        if not _is_ipv4(ntp):
            out.append(("dns", "udp", "", 53, False))  # the resolver the network assigned
        out.append(("ntp", "udp", ntp, settings.get("ntp_port", 123), False))
    return out
