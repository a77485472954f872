# MicroPython unit tests of the declared network behaviour (sbd.network_policy).
from sbd import network_policy, version

LAB = {"broker_addr": "198.18.0.1", "broker_port": 8883, "broker_host": "broker.sbd.lab", "ntp_host": ""}


def test_listens_on_nothing():
    assert network_policy.LISTENS == ()


def test_mud_url_is_https_and_names_the_model():
    url = network_policy.mud_url()
    assert url.startswith("https://") and url.endswith("/" + version.MODEL + ".json"), url


def test_only_the_broker_without_an_ntp_server():
    assert network_policy.outbound(LAB) == [("mqtt", "tcp", "198.18.0.1", 8883, True)]


def test_ntp_by_address_and_by_name():
    by_ip = dict(LAB, ntp_host="198.18.0.1")
    assert network_policy.outbound(by_ip)[1:] == [("ntp", "udp", "198.18.0.1", 123, False)]
    by_name = dict(LAB, ntp_host="pool.ntp.org")
    assert [f[0] for f in network_policy.outbound(by_name)] == ["mqtt", "dns", "ntp"]


def test_ntp_on_the_port_of_the_settings():
    lab = dict(LAB, ntp_host="127.0.0.1", ntp_port=10123)
    assert network_policy.outbound(lab)[1:] == [("ntp", "udp", "127.0.0.1", 10123, False)]
