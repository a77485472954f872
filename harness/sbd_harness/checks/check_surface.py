"""The attack surface: what the board listens on, what it connects to, and
what its locked serial console says to anyone who plugs in.

The network checks need a board with an address of its own (an emulated
board in its network namespace, run as root): on shared loopback a scan sees
the host's services and the board's connections cannot be told from the
host's, so they skip and say why. What the firmware declares comes from its
sbd.network_policy, through the MUD file the harness writes from it
(sbd_harness.mud).
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

import pytest

from sbd_harness import mud, surface
from sbd_harness.boards.base import BoardError
from sbd_harness.checks.online import locked_device_id, wait_online
from sbd_harness.checks.leaks import find_key
from sbd_harness.pki import certificate_mud_url
from sbd_harness.watch import Watcher, on_topic

RUNNING_SETTLE_S = 3.0   # after the boot line: the application is in its main loop
SERIAL_WATCH_S = 10.0    # serial output recorded after a locked boot's boot line
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")
PEM = re.compile(r"-----BEGIN [A-Z ]+-----")
SECRET_FIELD = re.compile(r'"(wifi_psk|psk|pass(word)?|secret|token|sk|private_key|key)"\s*:\s*"[^"]+"', re.I)


def _netns(board) -> dict[str, Any] | None:
    """The board's lab network, when it has a namespace of its own."""
    conf = getattr(board, "conf", None)
    net = (conf or {}).get("net") or {}
    return net if net.get("mode") == "netns" and net.get("netns") and net.get("host_if") else None


def _require_own_address(board) -> dict[str, Any]:
    net = _netns(board)
    if net is None:
        if getattr(board, "kind", "") == "emulated":
            pytest.skip("the board shares the host's loopback (no network namespace: run as root), so a scan "
                        "would see the host's services and its flows could not be told from the host's")
        pytest.skip("the harness has no address of this board's own to scan or watch (real boards: "
                    "scan its Wi-Fi address with your own tools)")
    return net


def _settings(board) -> dict[str, Any] | None:
    try:
        return mud.board_settings(board)
    except mud.MudError:
        return None


def _running(board) -> None:
    """A fresh boot, into the application's main loop (its first network
    attempt, where it has settings): what is listening then is what runs."""
    since = board.log_size() if hasattr(board, "log_size") else 0
    board.capture_boot("hard", settle=RUNNING_SETTLE_S)
    if hasattr(board, "wait_for_output") and _settings(board) is not None:
        try:
            board.wait_for_output('"sbd": "net"', since, timeout=30)
        except BoardError:  # no network attempt: the scan still shows what listens
            pass


@pytest.mark.sbd_check(
    id="no-listening-ports",
    title="A scan of all 65535 TCP ports and a UDP probe of every port of the board's address find only "
          "what the firmware declares: nothing",
    etsi_en_303_645=["5.6-1", "5.6-5"], nist_ir_8259a=["4"], eu_cra=["I(2)(j)"], owasp_isvs=["3.1.3"])
def check_no_listening_ports(sbd_board, sbd_bundle, sbd_evidence):
    net = _require_own_address(sbd_board)
    address = net["address"]
    policy = mud.load_policy(sbd_bundle.source)
    declared = {(proto, int(port)) for proto, port in policy.LISTENS}
    _running(sbd_board)
    tcp = surface.scan_tcp(address)
    with surface.icmp_unlimited(net["netns"]) as lifted:
        udp = surface.probe_udp(address)
    inside = surface.namespace_sockets(net["netns"])
    sbd_evidence.update({"address": address, "declared_listening": sorted(declared),
                         "tcp": tcp.summary(), "udp": udp.summary(), "icmp_limits_lifted": sorted(lifted),
                         "namespace_sockets": inside})
    assert tcp.closed + len(tcp.open) > 0, \
        f"nothing at {address} answered the TCP scan: is the board on the lab network?"
    extra_tcp = [p for p in tcp.open if ("tcp", p) not in declared]
    assert not extra_tcp, f"TCP ports open on {address} that the firmware does not declare: {extra_tcp}"
    assert not tcp.unanswered, (f"{len(tcp.unanswered)} TCP ports neither accepted nor refused a connection "
                                f"(e.g. {tcp.unanswered[:10]}): the scan is inconclusive")
    extra_udp = [p for p in udp.open if ("udp", p) not in declared]
    assert not extra_udp, f"UDP ports on {address} answered a probe, undeclared: {extra_udp}"
    silent = [p for p in udp.unanswered if ("udp", p) not in declared]
    if lifted:  # no rate limit, no filter: only a bound socket keeps a port from refusing
        assert not silent, (f"UDP ports on {address} sent no port-unreachable (something holds them, "
                            f"undeclared): {silent[:20]}")
    else:
        sbd_evidence["udp_note"] = "ICMP rate limits could not be lifted: silent UDP ports are inconclusive"


@pytest.mark.sbd_check(
    id="connections-match-mud",
    title="Every flow the board starts, captured on its own link from reset through a telemetry period "
          "online, is one its MUD file (RFC 8520, written from the firmware's declaration) allows; "
          "it announces that MUD URL",
    etsi_en_303_645=["5.6-5"], eu_cra=["I(2)(i)", "I(2)(j)"])
def check_connections_match_mud(sbd_board, sbd_boot, sbd_bundle, sbd_broker, sbd_ca, sbd_evidence):
    net = _require_own_address(sbd_board)
    device_id = locked_device_id(sbd_boot)
    settings = _settings(sbd_board)
    if settings is None:
        pytest.skip("the board holds no settings (broker, Wi-Fi) to write its MUD file from")
    if (settings["broker_addr"], settings["broker_port"]) != (sbd_broker.address, sbd_broker.port):
        pytest.skip(f"the board is configured for the broker at {settings['broker_addr']}:{settings['broker_port']}, "
                    f"the lab broker runs at {sbd_broker.address}:{sbd_broker.port} (give --broker): "
                    "it cannot go online")
    document = mud.build(mud.declaration(settings, sbd_bundle.source))
    url = document["ietf-mud:mud"]["mud-url"]
    base = f"devices/{device_id}"
    lan = surface.local_network(net["address"], net["netmask"])
    with surface.FlowWatch(net["host_if"], net["address"]) as watch:
        with Watcher(sbd_broker, f"{base}/#") as w:
            birth = wait_online(sbd_board, w, base).json()
            online_at = time.monotonic()
            telemetry = w.collect(on_topic(f"{base}/telemetry"), 2, timeout=45)
            # at least one telemetry period online: what the device does periodically shows too
            time.sleep(max(0.5, online_at + settings.get("telemetry_s", 10) + 1 - time.monotonic()))
    flows = watch.started()
    inside = surface._netns(net["netns"], "ss", "-H", "-tanp").stdout.split("\n")
    undeclared = [f for f in flows if not mud.allows_from_device(document, f["protocol"], f["address"],
                                                                 f["port"], lan)]
    cert = sbd_ca.issued_certificate(device_id)
    cert_url = certificate_mud_url(cert) if cert is not None else None
    sbd_evidence.update({"mud_url": url, "birth_mud_url": birth.get("mud_url"), "certificate_mud_url": cert_url,
                         "flows_started_by_board": flows, "undeclared": undeclared, "frames_seen": watch.frames,
                         "telemetry_seen": len(telemetry),
                         "namespace_connections": [" ".join(x.split()) for x in inside if x.strip()][:20],
                         "mud_file": document})
    broker = {"protocol": "tcp", "address": settings["broker_addr"], "port": settings["broker_port"]}
    assert any({k: f[k] for k in broker} == broker for f in flows), \
        f"the capture saw no connection to the broker {broker}: it cannot vouch for the board's flows"
    assert not undeclared, f"the board started flows its MUD file does not allow: {undeclared}"
    assert birth.get("mud_url") == url, f"the birth message announces MUD URL {birth.get('mud_url')!r}, not {url!r}"
    assert cert_url in (None, url), f"the device certificate's id-pe-mud-url is {cert_url!r}, not {url!r}"


def _secrets_in(text: str, board) -> list[str]:
    """Names of the device's own secrets that appear in `text`."""
    found = []
    settings = _settings(board) or {}
    psk = settings.get("wifi_psk") or os.environ.get("SBD_WIFI_PSK")
    if psk and psk in text:
        found.append("Wi-Fi passphrase")
    if getattr(board, "kind", "") == "emulated":
        from sbd_harness.emulator.nvs_reader import read_store
        secret = read_store(board.flash_image().read_partition("nvs")).get(("sbd", "sk"))
        if secret:
            found += [f"private key ({form})" for form in find_key(secret, text.encode(errors="replace"))]
    return found


@pytest.mark.sbd_check(
    id="serial-discloses-nothing-after-lock",
    title="A locked board's serial output, from reset through its first network attempts, discloses no "
          "secret, key, certificate armour, traceback or source path beyond its boot line",
    etsi_en_303_645=["5.6-2"], eu_cra=["I(2)(e)", "I(2)(j)"], owasp_isvs=["5.1.1"])
def check_serial_discloses_nothing(sbd_board, sbd_boot, sbd_evidence):
    boot = sbd_boot.boot_line
    if boot is None:
        pytest.skip("no boot line (see boot-line-identifies-firmware)")
    if boot.get("security", {}).get("console") != "locked":
        pytest.skip("the console is open by design until the board is provisioned and locked")
    capture = sbd_board.capture_boot("hard", timeout=30, settle=SERIAL_WATCH_S)
    text = capture.transcript
    text = text[text.rfind("rst:0x"):] if "rst:0x" in text else text
    problems = _secrets_in(text, sbd_board)
    problems += [f"traceback: {m.group(0)[:80]}" for m in TRACEBACK.finditer(text)][:5]
    problems += [f"PEM block: {m.group(0)}" for m in PEM.finditer(text)][:5]
    problems += [f"secret-named field: {m.group(0)[:40]}" for m in SECRET_FIELD.finditer(text)][:5]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    sbd_evidence.update({"bytes": len(text), "lines": len(lines), "seconds_watched": SERIAL_WATCH_S,
                         "unstructured_lines": [line[:100] for line in lines if not line.startswith("{")][:20],
                         "problems": problems})
    assert capture.boot_line is not None, "the locked board showed no boot line on this boot"
    assert not problems, f"the locked board's serial output discloses: {problems}"
