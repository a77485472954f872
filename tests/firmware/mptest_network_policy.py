# MicroPython unit tests of the declared network behaviour (sbd.network_policy).
from sbd import network_policy, version

LAB = {"broker_addr": "198.18.0.1", "broker_port": 8883, "broker_host": "broker.sbd.lab", "ntp_host": ""}


def test_declares_what_the_official_build_listens_on():
    # the firmware binds nothing; the port's mDNS responder and DHCP client do
    assert network_policy.LISTENS == (("udp", 5353), ("udp", 68))


def test_hostname_is_per_device_and_fits_the_port():
    name = network_policy.hostname("3c71bf0a1b2c")
    assert name == "sbd-3c71bf0a1b2c" and len(name) <= 32  # MICROPY_PY_NETWORK_HOSTNAME_MAX_LEN


def test_mud_url_is_https_and_names_the_model():
    url = network_policy.mud_url()
    assert url.startswith("https://") and url.endswith("/" + version.MODEL + ".json"), url


def test_only_the_broker_and_the_ports_own_flows_without_an_ntp_server():
    assert network_policy.outbound(LAB) == [("mqtt", "tcp", "198.18.0.1", 8883, True),
                                            ("dhcp", "udp", "", 67, False),
                                            ("mdns", "udp", "224.0.0.251", 5353, False)]


def test_ntp_by_address_and_by_name():
    by_ip = dict(LAB, ntp_host="198.18.0.1")
    assert network_policy.outbound(by_ip)[3:] == [("ntp", "udp", "198.18.0.1", 123, False)]
    by_name = dict(LAB, ntp_host="pool.ntp.org")
    assert [f[0] for f in network_policy.outbound(by_name)] == ["mqtt", "dhcp", "mdns", "dns", "ntp"]


def test_ntp_on_the_port_of_the_settings():
    lab = dict(LAB, ntp_host="127.0.0.1", ntp_port=10123)
    assert network_policy.outbound(lab)[3:] == [("ntp", "udp", "127.0.0.1", 10123, False)]
