# Board support: the `network` module of MicroPython's ESP32 port, emulated.
# The "access point" is the lab: the board's network namespace with one link
# to the lab bridge. WLAN reports the link's real state, so cutting the link
# from the host (ip link set ... down) is a Wi-Fi outage for the firmware.
# As on the official build (ports/esp32/network_wlan.c), the first GOT_IP after
# power-on starts ESP-IDF's mDNS responder with the hostname set at that moment,
# and the station runs a DHCP client: the supervisor runs both beside the CPU
# (sbd_harness.emulator.idf_net); Python cannot stop them.
# Association takes ASSOC_MS, as on the chip, where connect() only starts it
# (ports/esp32/network_wlan.c): status() is STAT_CONNECTING until the station
# has its address, and after a loss the port reassociates on its own (no new
# connect() needed), which takes ASSOC_MS again once the access point is back.
import binascii
import _board

_ticks_ms = _board._host_time.ticks_ms
_ticks_diff = _board._host_time.ticks_diff
_ticks_add = _board._host_time.ticks_add
# WPA2 handshake and DHCP: one to a few seconds on an ESP32; the low end here,
# as every boot of every check pays it (docs/emulated-board.md)
ASSOC_MS = 1000

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

_hostname = "mpy-esp32"  # MICROPY_PY_NETWORK_HOSTNAME_DEFAULT for the ESP32 (mpconfigport.h)
_mdns_told = False
_net = _board.conf["net"]


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    if len(name) > 32:  # MICROPY_PY_NETWORK_HOSTNAME_MAX_LEN
        raise ValueError("hostname too long")
    _hostname = name


def country(code=None):
    return "01" if code is None else None


class _Interface:
    # One per radio interface: every WLAN(STA_IF) object shares it, as on the port.
    def __init__(self):
        self.active = False
        self.ssid = None
        self.status = STAT_IDLE
        self.requested = False  # wifi_sta_connect_requested: reassociate after a loss
        self.failure = None  # what the access point answers: None, or STAT_NO_AP_FOUND / STAT_WRONG_PASSWORD
        self.started = 0  # ticks when this association attempt began
        self.assoc_at = None  # ticks when it completes (None: link down, not yet begun)


_interfaces = {STA_IF: _Interface(), AP_IF: _Interface()}


class WLAN:
    def __init__(self, interface_id=STA_IF):
        if interface_id not in _interfaces:
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        self._s = _interfaces[interface_id]

    def active(self, is_active=None):
        if is_active is None:
            return self._s.active
        if self._s.active != bool(is_active):
            # the radio itself, as a lab receiver would see it: the supervisor keeps it, whatever
            # the firmware later says of itself
            _board.tell_supervisor("radio %s %d" % ("wifi_ap" if self._if == AP_IF else "wifi_sta",
                                                    int(bool(is_active))))
        self._s.active = bool(is_active)
        if not self._s.active:
            self._s.status = STAT_IDLE
            self._s.requested = False
        return None

    def _require_sta(self):
        if self._if != STA_IF:
            raise OSError("AP mode is not available on the emulated board")
        if not self._s.active:
            raise OSError("Wifi Not Started")

    def connect(self, ssid=None, key=None, *, bssid=None):
        self._require_sta()
        s = self._s
        s.ssid = ssid
        if ssid != _net["ssid"]:
            s.failure = STAT_NO_AP_FOUND
        elif _net.get("psk") and key != _net["psk"]:
            s.failure = STAT_WRONG_PASSWORD
        else:
            s.failure = None
        s.requested = True
        s.started = _ticks_ms()
        s.assoc_at = None
        s.status = STAT_CONNECTING

    def disconnect(self):
        self._s.requested = False
        self._s.status = STAT_IDLE

    def _got_ip(self):
        # IP_EVENT_STA_GOT_IP: mdns_init() and mdns_hostname_set(hostname) once per
        # power-on (the supervisor ignores the repeats a soft reset brings)
        global _mdns_told
        if not _mdns_told:
            _mdns_told = True
            _board.tell_supervisor("got_ip " + _hostname)

    def status(self, param=None):
        if param == "rssi":
            if not self.isconnected():
                raise OSError("STA must be connected")
            return -48
        if param is not None:
            raise ValueError("unknown status param")
        s = self._s
        if not s.requested:
            return s.status
        now = _ticks_ms()
        if s.failure is not None:
            # the port keeps retrying; status() reports the last reason once there is one
            if _ticks_diff(now, s.started) >= ASSOC_MS:
                s.status = s.failure
            return s.status
        if not _board.link_up():  # beacon timeout: the port reassociates when the AP is back
            s.assoc_at = None
            s.status = STAT_CONNECTING
        elif s.assoc_at is None:
            s.assoc_at = _ticks_add(now, ASSOC_MS)
            s.status = STAT_CONNECTING
        elif _ticks_diff(now, s.assoc_at) >= 0:
            s.status = STAT_GOT_IP
            self._got_ip()
        return s.status

    def isconnected(self):
        return self._s.active and self._if == STA_IF and self.status() == STAT_GOT_IP

    def ifconfig(self, config=None):
        if config is not None:
            raise OSError("static addresses are set by the lab network")
        if not self.isconnected():
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        return (_net["address"], _net["netmask"], _net["gateway"], _net["dns"])

    def ipconfig(self, *args, **kwargs):
        if args:
            key = args[0]
            if key == "addr4":
                c = self.ifconfig()
                return (c[0], c[1])
            if key == "gw4":
                return self.ifconfig()[2]
            if key == "dhcp4":
                return True
            raise ValueError("unexpected key")
        if kwargs:
            raise OSError("static addresses are set by the lab network")

    def config(self, *args, **kwargs):
        if kwargs:
            for k, v in kwargs.items():
                if k in ("pm", "txpower", "reconnects", "dhcp_hostname", "hostname"):
                    if k in ("dhcp_hostname", "hostname"):
                        hostname(v)
                    continue
                raise ValueError("unknown config param")
            return None
        key = args[0]
        if key == "mac":
            return binascii.unhexlify(_board.conf["unique_id"])
        if key == "ssid" or key == "essid":
            return self._s.ssid or ""
        if key in ("hostname", "dhcp_hostname"):
            return _hostname
        if key == "channel":
            return 1
        raise ValueError("unknown config param")

    def scan(self):
        self._require_sta()
        return [(_net["ssid"].encode(), b"\x02\x00\x00\x00\x00\x01", 1, -48, AUTH_WPA2_PSK, False)]
