"""Attack surface: the declared network behaviour, the MUD file
written from it, the id-pe-mud-url certificate extension, and the three
surface checks of `sbd verify`, passing on the reference firmware and each
failing on a variant broken for it."""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from helpers import only, verify_report

import pytest

from sbd_harness.boards.flashing import flash_firmware
from sbd_harness.emulator import netlab
from sbd_harness.identity.pki import PKIError, mud_url_extension
from sbd_harness.lab import ntp
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.emulator.idf_net import Responder, answers
from sbd_harness.lab.surface import Flow, FlowWatch, mdns_names, mdns_probe, namespace_sockets, probe_udp
from sbd_harness.release import mud
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.mistakes import build_variant
from sbd_harness.paths import REPO_ROOT as REPO, firmware_dir

REFERENCE_URL = "https://mud.example.invalid/sbd-reference-esp32.json"
needs_netns = pytest.mark.skipif(not netlab.namespaces_available(),
                                 reason="the surface checks need a board with its own network namespace (root)")


def _verify(board, ca, tmp_path, port: int, *extra: str) -> tuple[int, dict[str, dict]]:
    code, data = verify_report(board, ca, tmp_path / f"report-{board.name}.json", *extra, port=port)
    return code, {c["id"]: c for c in data["checks"]}


# the reviewed policy and the MUD file --------------------------------------------------
def test_the_mud_file_allows_the_broker_the_ports_own_flows_and_only_its_listeners():
    decl = mud.declaration({"broker_addr": "198.18.0.1", "broker_port": 8883, "ntp_host": ""})
    assert decl["mud_url"] == REFERENCE_URL
    assert decl["listens"] == [{"protocol": "udp", "port": 68}, {"protocol": "udp", "port": 5353}]
    assert decl["outbound"] == [
        {"purpose": "mqtt", "protocol": "tcp", "host": "198.18.0.1", "port": 8883, "tls": True},
        {"purpose": "dhcp", "protocol": "udp", "host": "", "port": 67, "tls": False},
        {"purpose": "mdns", "protocol": "udp", "host": "224.0.0.251", "port": 5353, "tls": False}]
    doc = mud.build(decl)
    head = doc["ietf-mud:mud"]
    assert head["mud-version"] == 1 and head["mud-url"] == REFERENCE_URL and head["is-supported"] is True
    assert {"last-update", "cache-validity", "systeminfo"} <= set(head)
    names = {a["name"] for a in doc["ietf-access-control-list:acls"]["acl"]}
    policies = ("from-device-policy", "to-device-policy")
    assert {head[p]["access-lists"]["access-list"][0]["name"] for p in policies} == names
    assert mud.allows_from_device(doc, "tcp", "198.18.0.1", 8883)
    assert not mud.allows_from_device(doc, "tcp", "198.18.0.1", 1883)
    assert not mud.allows_from_device(doc, "tcp", "198.18.0.2", 8883)
    assert not mud.allows_from_device(doc, "udp", "198.18.0.1", 123)
    assert mud.allows_from_device(doc, "udp", "224.0.0.251", 5353)
    assert not mud.allows_from_device(doc, "udp", "224.0.0.252", 5353)
    import ipaddress
    assert mud.allows_from_device(doc, "udp", "198.18.0.1", 67, ipaddress.IPv4Network("198.18.0.0/24"))
    # what a scan of the official build finds, and nothing over TCP
    assert mud.listening_ports(doc) == [("udp", 68), ("udp", 5353)]
    # the return traffic is allowed only for connections the device opened
    to_dev = next(a for a in doc["ietf-access-control-list:acls"]["acl"] if a["name"].endswith("v4to"))
    tcp = to_dev["aces"]["ace"][0]["matches"]["tcp"]
    assert tcp["ietf-mud:direction-initiated"] == "from-device" and tcp["source-port"]["port"] == 8883


def test_an_ntp_server_by_name_is_declared_with_its_dns_lookup():
    decl = mud.declaration({"broker_addr": "10.0.0.5", "broker_port": 1884, "ntp_host": "pool.ntp.org"})
    assert [(f["purpose"], f["protocol"], f["port"]) for f in decl["outbound"]] == \
        [("mqtt", "tcp", 1884), ("dhcp", "udp", 67), ("mdns", "udp", 5353), ("dns", "udp", 53), ("ntp", "udp", 123)]
    doc = mud.build(decl)
    import ipaddress
    lan = ipaddress.IPv4Network("10.0.0.0/24")
    assert mud.allows_from_device(doc, "udp", "10.0.0.1", 53, lan)
    assert not mud.allows_from_device(doc, "udp", "8.8.8.8", 53, lan)


def test_the_firmware_declares_what_the_reviewed_policy_lists():
    # The device's own module (its MUD URL, its hostname) and the reviewed file say the same.
    policy = mud.load_policy()
    own = mud.firmware_declares()
    assert own is not None and sorted(own["listens"]) == sorted(mud.listening(policy))
    assert own["mud_base"] + policy["model"] + ".json" == policy["mud_url"]
    assert 'return "sbd-" + device_id' in (firmware_dir() / "lib/sbd/network_policy.py").read_text()
    assert mud.hostname(policy, "3c71bf0a1b2c") == "sbd-3c71bf0a1b2c"


def test_a_firmware_that_declares_its_own_backdoor_does_not_change_the_mud_file(tmp_path):
    fw = build_variant("declared-backdoor", tmp_path / "fw")
    assert ("tcp", 2323) in mud.firmware_declares(fw)["listens"]  # what the firmware says of itself
    settings = {"broker_addr": "198.18.0.1", "broker_port": 8883}
    doc = mud.build(mud.declaration(settings, fw))
    assert ("tcp", 2323) not in mud.listening_ports(doc)
    assert mud.listening_ports(doc) == mud.listening_ports(mud.build(mud.declaration(settings)))
    fw2 = build_variant("declared-connection", tmp_path / "fw2")
    assert not mud.allows_from_device(mud.build(mud.declaration(settings, fw2)), "udp", "198.18.0.1", 123)


def test_the_mud_file_is_written_without_running_firmware_code(tmp_path):
    # The checks run as root: a firmware's Python must never run on the host.
    fw = build_variant("declared-backdoor", tmp_path / "fw")
    marker = tmp_path / "ran"
    for name in ("network_policy.py", "version.py"):
        path = fw / "lib" / "sbd" / name
        path.write_text(f"open({str(marker)!r}, 'w').write('firmware code ran on the host')\n" + path.read_text())
    decl = mud.declaration({"broker_addr": "198.18.0.1", "broker_port": 8883}, fw)
    assert mud.firmware_declares(fw)["listens"] == [("tcp", 2323), ("udp", 68), ("udp", 5353)]
    assert not marker.exists()
    assert decl["fw_version"] == "0.1.0"


def test_a_missing_or_malformed_reviewed_policy_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SBD_NETWORK_POLICY", str(tmp_path / "none.json"))
    with pytest.raises(mud.MudError, match="no reviewed network policy"):
        mud.declaration({"broker_addr": "198.18.0.1", "broker_port": 8883})
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", "--broker", "198.18.0.1:8883"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no reviewed network policy" in proc.stderr
    bad = json.loads((REPO / "boards" / "network-policy.json").read_text())
    bad["listens"].append({"protocol": "tcp", "port": 2323})  # no reason given: not reviewed
    (tmp_path / "none.json").write_text(json.dumps(bad))
    with pytest.raises(mud.MudError, match="reason"):
        mud.load_policy()


def test_sbd_mud_needs_a_board_or_a_broker(tmp_path):
    for args in ([], ["--board", "x", "--broker", "1.2.3.4:8883"], ["--broker", "1.2.3.4"]):
        proc = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "sbd: error:" in proc.stderr, (args, proc.stderr)
    out = tmp_path / "device.json"
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", "--broker", "192.168.1.10:8883",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert mud.allows_from_device(json.loads(out.read_text()), "tcp", "192.168.1.10", 8883)


# the certificate extension -------------------------------------------------------------
def test_the_mud_url_extension_is_an_ia5string_that_reads_back():
    for url in (REFERENCE_URL, "https://mud.example.com/" + "a" * 200 + ".json"):
        ext = mud_url_extension(url)
        assert ext.oid.dotted_string == "1.3.6.1.5.5.7.1.25" and ext.value[0] == 0x16
    for bad in ("http://plain.example/x.json", "https://spaces in/url", "https://\u00e9.example/"):
        with pytest.raises(PKIError, match="not a MUD URL"):
            mud_url_extension(bad)


# the flow capture ---------------------------------------------------------------------
def _frame(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return b"\x00" * 12 + b"\x08\x00" + ip + l4


def test_the_flow_capture_counts_syns_and_datagrams_the_board_sends():
    board = socket.inet_aton("198.18.0.10")
    tcp = lambda flags: struct.pack("!HHIIBBHHH", 40000, 8883, 0, 0, 0x50, flags, 0, 0, 0)  # noqa: E731
    udp = struct.pack("!HHHH", 40000, 123, 8, 0)
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 6, tcp(0x02)), board) == Flow("tcp", "198.18.0.1", 8883)
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 17, udp), board) == Flow("udp", "198.18.0.1", 123)
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 6, tcp(0x12)), board) is None  # SYN-ACK: an answer
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 6, tcp(0x10)), board) is None
    assert FlowWatch.parse(_frame("198.18.0.1", "198.18.0.10", 6, tcp(0x02)), board) is None  # to the board


# the emulated board's mDNS responder (the official ESP32 build's) -----------------------
def test_the_responder_answers_a_queries_for_its_hostname_and_nothing_else():
    responder = Responder("127.0.0.1", "sbd-3C71bf0a1b2c", port=0, multicast=False)
    port = responder.sock.getsockname()[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    try:
        def ask(payload: bytes) -> bytes | None:
            client.sendto(payload, ("127.0.0.1", port))
            return responder.handle(*responder.sock.recvfrom(9000))

        assert ask(b"\r\n") is None and ask(mdns_probe(["other.local"])) is None
        assert ask(mdns_probe(mdns_names(["nobody"]))) is None  # the port's default names: not this board's
        assert ask(mdns_probe(mdns_names(["sbd-3c71bf0a1b2c"]))) is not None
        reply = client.recv(2048)  # legacy unicast (RFC 6762 6.7): to the asker, with its ID
        assert reply[:2] == b"\x5b\xd0" and answers(reply) == [("sbd-3c71bf0a1b2c.local", "127.0.0.1")]
    finally:
        client.close()
        responder.sock.close()


@needs_netns
def test_the_emulated_board_answers_mdns_once_associated_as_the_official_build_does(locked_board):
    board = locked_board(None, free_port(lab_address()))  # no broker there: it joins Wi-Fi, then fails TLS
    capture = board.capture_boot("hard", timeout=30, until='"event": ')
    device_id = capture.boot_line["device_id"]
    net = board.own_network()
    names = mdns_names([f"sbd-{device_id}"])
    found: list = []
    for _ in range(10):  # the port's mDNS task starts at GOT_IP, beside the firmware
        scan = probe_udp(net["address"], [5353], payloads={5353: mdns_probe(names)}, retries=0)
        found = answers(scan.replies.get(5353, b""))
        if found:
            break
        time.sleep(0.5)
    assert found == [(f"sbd-{device_id}.local", net["address"])]
    inside = " ".join(namespace_sockets(net["netns"]))
    assert ":5353 " in inside and ":68 " in inside, inside  # the responder and the DHCP client's port


# the checks on boards ---------------------------------------------------------------


@needs_netns
@pytest.mark.parametrize("variant, failing, selector, reason", [
    ("open-port", "no-listening-ports", "check_no_listening", "[2323]"),
    ("declared-backdoor", "no-listening-ports", "check_no_listening", "[2323]"),
    ("default-hostname", "no-listening-ports", "check_no_listening", "mpy-esp32.local"),
    ("undeclared-connection", "connections-match-mud", "check_connections", "'port': 1900"),
    ("declared-connection", "connections-match-mud", "check_connections", "'port': 1900"),
    ("serial-secret", "serial-discloses-nothing-after-lock", "check_serial_discloses", "Wi-Fi passphrase"),
])
def test_a_surface_check_fails_on_the_variant_broken_for_it(locked_board, ca, tmp_path, variant, failing,
                                                             selector, reason):
    port = free_port(lab_address())
    fw = build_variant(variant, tmp_path / "fw")
    board = locked_board(fw, port)
    code, checks = _verify(board, ca, tmp_path, port, "--firmware", str(fw), *only(failing))
    assert checks[failing]["status"] == "fail", json.dumps(checks[failing], indent=1)[-3000:]
    assert reason in checks[failing]["message"], checks[failing]["message"]
    assert code == 1


@needs_netns
def test_the_surface_checks_pass_on_the_reference_and_the_mud_file_agrees_with_the_scan(locked_board, ca, tmp_path):
    port = free_port(lab_address())
    board = locked_board(None, port)
    code, checks = _verify(board, ca, tmp_path, port, *only("no-listening-ports", "connections-match-mud"))
    for check in ("no-listening-ports", "connections-match-mud"):
        assert checks[check]["status"] == "pass", json.dumps(checks[check], indent=1)[-3000:]
    scan = checks["no-listening-ports"]["evidence"]
    assert scan["udp"]["open"] == [5353] and 68 in scan["udp"]["unanswered"] and scan["tcp"]["open"] == []
    assert scan["declared_listening"] == [["udp", 68], ["udp", 5353]]
    assert [a for _, a in scan["mdns_answers"]] == [scan["address"]]
    seen = checks["connections-match-mud"]["evidence"]
    flows = {(f["protocol"], f["address"], f["port"]) for f in seen["flows_started_by_board"]}
    # the lab's NTP server, the broker, and the responder's probes and announcement at GOT_IP
    # (RFC 6762 section 8)
    assert flows == {("tcp", lab_address(), port), ("udp", *ntp.endpoint()), ("udp", "224.0.0.251", 5353)}, flows
    assert mud.listening_ports(seen["mud_file"]) == [("udp", 68), ("udp", 5353)]
    assert code == 0


def test_the_network_checks_skip_with_the_reason_on_shared_loopback(make_board, ca, tmp_path, monkeypatch):
    monkeypatch.setenv("SBD_NO_NETNS", "1")
    board = make_board("loop")
    assert board.describe()["network"] == "loopback"
    flash_firmware(board, FirmwareBundle.from_dir(None))
    code, checks = _verify(board, ca, tmp_path, free_port("127.0.0.1"), *only("no-listening-ports"))
    assert checks["no-listening-ports"]["status"] == "skip"
    assert "shares the host's loopback" in checks["no-listening-ports"]["message"]
