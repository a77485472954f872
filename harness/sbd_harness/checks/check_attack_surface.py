"""The attack surface: what the board listens on, what it connects to, and
what its locked serial console says to anyone who plugs in.

The network checks need a board with an address of its own (an emulated
board in its network namespace, run as root): on shared loopback a scan sees
the host's services and the board's connections cannot be told from the
host's, so they skip and say why. The board is held to the reviewed network
policy (boards/network-policy.json, through the MUD file the harness writes
from it, sbd_harness.release.mud), never to what the firmware under test
declares of itself: a firmware that opens a port and declares it too still
fails, and no firmware code runs on the host."""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from sbd_harness.boards.base import LinkControl, has
from sbd_harness.checks.common import board_settings
from sbd_harness.checks.online import FastTelemetry, locked_device_id, telemetry_since, wait_online
from sbd_harness.device.contract import topics
from sbd_harness.emulator.idf_net import answers as mdns_answers
from sbd_harness.identity.pki import certificate_mud_url
from sbd_harness.lab import surface
from sbd_harness.lab.watch import Watcher
from sbd_harness.release import mud


NET_EVENT_S = 30.0  # from reset to the firmware's first network event, where it has settings


def _require_own_address(board) -> dict[str, Any]:
    net = board.own_network() if has(board, LinkControl) else None
    if net is None:
        if has(board, LinkControl):
            pytest.skip("the board shares the host's loopback (no network namespace: run as root), so a scan "
                        "would see the host's services and its flows could not be told from the host's")
        pytest.skip("the harness has no address of this board's own to scan or watch (real boards: "
                    "scan its Wi-Fi address with your own tools)")
    return net


def _running(board) -> dict[str, Any]:
    """A fresh boot, into the application's main loop: where the board has settings, until the
    firmware reports its first network event on serial (it is past its start-up, its first attempt
    made); without settings, until its boot line. What is listening then is what runs."""
    configured = board_settings(board) is not None
    capture = board.capture_boot("hard", timeout=NET_EVENT_S, until='"event": ' if configured else None)
    return {"boot_s": round(capture.elapsed_s, 2), "net_event_seen": configured and '"event": ' in capture.transcript,
            "device_id": (capture.boot_line or {}).get("device_id")}


def _product_policy(bundle) -> dict[str, Any]:
    """The reviewed policy, which must be the build's product's (its model and MUD URL): a failure naming
    the value otherwise, e.g. the reference's policy or MUD_BASE left in place (release/product.py)."""
    try:
        return mud.product_policy(bundle.source)[1]
    except mud.MudError as exc:
        raise AssertionError(str(exc)) from None


@pytest.mark.sbd_check(
    id="no-listening-ports",
    title="A scan of all 65535 TCP ports and a UDP probe of every port of the board's address (an mDNS "
          "query on 5353) find exactly what the reviewed network policy lists: the official ESP32 build's "
          "mDNS responder and DHCP client")
def check_no_listening_ports(sbd_board, sbd_bundle, sbd_evidence):
    net = _require_own_address(sbd_board)
    address = net["address"]
    policy = _product_policy(sbd_bundle)
    declared = mud.listening(policy)
    sbd_evidence["running"] = _running(sbd_board)
    device_id = sbd_evidence["running"]["device_id"]
    names = surface.mdns_names([mud.hostname(policy, device_id)] if device_id else [])
    with surface.icmp_unlimited(net["netns"]) as lifted, \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as beside:
        # The TCP scan runs beside the UDP probe, in a process of its own: each is mostly Python
        # work on 65535 sockets, and in threads they would take turns.
        tcp_scan = beside.submit(surface.scan_tcp, address)
        # the policy's UDP listeners are not waited on twice more when silent (the DHCP client always
        # is; the responder is asked again below): their silence is no finding either way
        udp = surface.probe_udp(address, payloads={5353: surface.mdns_probe(names)},
                                expected_silent={p for proto, p in declared if proto == "udp"})
        tcp = tcp_scan.result()
    inside = surface.namespace_sockets(net["netns"])
    mdns = mdns_answers(udp.replies.get(5353, b""))
    sbd_evidence.update({"address": address, "policy": str(mud.policy_path()),
                         "declared_listening": sorted(declared),
                         "firmware_declares": mud.firmware_declares(sbd_bundle.source),
                         "mdns_names_asked": names, "mdns_answers": mdns,
                         "tcp": tcp.summary(), "udp": udp.summary(), "icmp_limits_lifted": sorted(lifted),
                         "namespace_sockets": inside})
    assert tcp.closed + len(tcp.open) > 0, \
        f"nothing at {address} answered the TCP scan: is the board on the lab network?"
    extra_tcp = [p for p in tcp.open if ("tcp", p) not in declared]
    assert not extra_tcp, f"TCP ports open on {address} that the reviewed policy does not list: {extra_tcp}"
    assert not tcp.unanswered, (f"{len(tcp.unanswered)} TCP ports neither accepted nor refused a connection "
                                f"(e.g. {tcp.unanswered[:10]}): the scan is inconclusive")
    extra_udp = [p for p in udp.open if ("udp", p) not in declared]
    assert not extra_udp, f"UDP ports on {address} answered a probe, not in the reviewed policy: {extra_udp}"
    silent = [p for p in udp.unanswered if ("udp", p) not in declared]
    if lifted:  # no rate limit, no filter: only a bound socket keeps a port from refusing
        assert not silent, (f"UDP ports on {address} sent no port-unreachable (something holds them, "
                            f"not in the reviewed policy): {silent[:20]}")
    else:
        sbd_evidence["udp_note"] = "ICMP rate limits could not be lifted: silent UDP ports are inconclusive"
    if sbd_evidence["running"]["net_event_seen"]:
        # Associated: the policy must not claim more than the scan finds either, or the MUD file lies.
        absent = sorted(p for p in declared if p[1] != 5353 and p[1] not in
                        (tcp.open if p[0] == "tcp" else udp.open + udp.unanswered))
        assert not absent, f"the reviewed policy lists {absent}, the scan finds them closed: the MUD file is out of date"
        if ("udp", 5353) in declared:
            wanted = names[0] if device_id else None
            for _ in range(5):  # the port's mDNS task starts at GOT_IP, beside the firmware: give it time
                if mdns:
                    break
                time.sleep(1)
                again = surface.probe_udp(address, [5353], payloads={5353: surface.mdns_probe(names)}, retries=0)
                mdns = mdns_answers(again.replies.get(5353, b""))
            sbd_evidence["mdns_answers"] = mdns
            assert mdns and (wanted is None or wanted in {n for n, _ in mdns}), \
                (f"the reviewed policy lists the mDNS responder, but UDP 5353 of {address} gave no answer for "
                 f"{wanted or names}: {mdns or 'nothing'}")
            assert all(a == address for _, a in mdns), f"the mDNS answer names another address: {mdns}"


@pytest.mark.sbd_check(
    id="connections-match-mud",
    title="Every flow the board starts, captured on its own link from reset through a telemetry period "
          "online, is one its MUD file (RFC 8520, written from the reviewed network policy) allows; "
          "it announces that MUD URL")
def check_connections_match_mud(sbd_board, sbd_boot, sbd_bundle, sbd_broker, sbd_ca, sbd_evidence, sbd_soak):
    net = _require_own_address(sbd_board)
    device_id = locked_device_id(sbd_boot)
    settings = board_settings(sbd_board)
    if settings is None:
        pytest.skip("the board holds no settings (broker, Wi-Fi) to write its MUD file from")
    if (settings["broker_addr"], settings["broker_port"]) != (sbd_broker.address, sbd_broker.port):
        pytest.skip(f"the board is configured for the broker at {settings['broker_addr']}:{settings['broker_port']}, "
                    f"the lab broker runs at {sbd_broker.address}:{sbd_broker.port} (give --broker): "
                    "it cannot go online")
    _product_policy(sbd_bundle)  # the product's own reviewed policy, not the reference's
    document = mud.build(mud.declaration(settings, sbd_bundle.source))  # the reviewed policy, not the firmware's
    url = document["ietf-mud:mud"]["mud-url"]
    topic = topics(device_id)
    lan = surface.local_network(net["address"], net["netmask"])
    with surface.FlowWatch(net["host_if"], net["address"]) as watch:
        with Watcher(sbd_broker, topic.all) as w:
            message = wait_online(sbd_board, w, topic)
            birth = message.json()
            if sbd_soak:  # at the device's own pace
                telemetry = telemetry_since(w, topic, message.at, 2, 45)
                # at least one telemetry period online: what the device does periodically shows too
                time.sleep(max(0.5, message.at + settings.get("telemetry_s", 10) + 1 - time.monotonic()))
            else:  # a reading a second: two readings a period apart, the device online all along
                with FastTelemetry(w, sbd_ca, device_id, required=False) as fast:
                    telemetry = telemetry_since(w, topic, message.at, 2, 10 if fast.active else 45)
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
