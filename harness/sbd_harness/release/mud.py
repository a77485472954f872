"""The device's Manufacturer Usage Description (RFC 8520), written from the
firmware's own declaration of its network behaviour.

One source of truth: `firmware/lib/sbd/network_policy.py`, the module the
device itself runs (it puts `mud_url()` in its birth message). The harness
loads that file, from the firmware folder under test, and evaluates it with
the device's settings (broker address and port, NTP server), which for an
emulated board it reads off the board's flash, where the device keeps them.
The birth message carries only the URL, not the whole policy: the device's
heap stays small, the MUD file can be written before a device ever connects,
and the checks compare the two (the URL in the birth message must be the
file's `mud-url`).

The file: an `ietf-mud:mud` container (mud-version 1, mud-url, last-update,
cache-validity, is-supported, systeminfo, the from-device and to-device
policies) and the `ietf-access-control-list:acls` they name. Outbound flows
are allowed only as initiated by the device; nothing may open a connection to
it, because it declares no listening port.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import ipaddress
import json
import sys
import types
from pathlib import Path
from typing import Any

from sbd_harness.errors import SbdError
from sbd_harness.paths import firmware_dir

PROTOCOLS = {"tcp": 6, "udp": 17}
CACHE_VALIDITY_HOURS = 48  # RFC 8520's default
MUD_URL_OID = "1.3.6.1.5.5.7.1.25"  # id-pe-mud-url, RFC 8520 section 10


class MudError(SbdError, ValueError):
    """A declaration or settings the MUD file cannot be written from."""


def load_policy(firmware: Path | None = None) -> types.ModuleType:
    """The firmware's sbd.network_policy module, loaded from its source.

    It imports `sbd.version` (the model name); both are loaded under a
    package name of their own, so nothing of the host's is shadowed."""
    lib = Path(firmware or firmware_dir()) / "lib" / "sbd"
    path = lib / "network_policy.py"
    if not path.is_file():
        raise MudError(f"{path} does not exist: this firmware declares no network behaviour")
    saved = {name: sys.modules.get(name) for name in ("sbd", "sbd.version", "sbd.network_policy")}
    package = types.ModuleType("sbd")
    package.__path__ = [str(lib)]  # type: ignore[attr-defined]
    try:
        sys.modules["sbd"] = package
        for name in ("version", "network_policy"):
            spec = importlib.util.spec_from_file_location(f"sbd.{name}", lib / f"{name}.py")
            if spec is None or spec.loader is None:
                raise MudError(f"cannot load {lib / (name + '.py')}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[f"sbd.{name}"] = module
            setattr(package, name, module)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # a broken firmware file: say which
                raise MudError(f"{lib / (name + '.py')}: {type(exc).__name__}: {exc}") from exc
        return module
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def declaration(settings: dict[str, Any], firmware: Path | None = None) -> dict[str, Any]:
    """What the firmware declares it does with these settings."""
    policy = load_policy(firmware)
    version = policy.version
    for key in ("broker_addr", "broker_port"):
        if key not in settings:
            raise MudError(f"the settings have no {key}: is the board provisioned with a broker?")
    outbound = [{"purpose": p, "protocol": proto, "host": host, "port": int(port), "tls": bool(tls)}
                for p, proto, host, port, tls in policy.outbound(settings)]
    for flow in outbound:
        if flow["protocol"] not in PROTOCOLS:
            raise MudError(f"declared flow {flow}: protocol must be tcp or udp")
    return {"mud_url": policy.mud_url(), "model": version.MODEL, "fw_version": version.VERSION,
            "listens": [{"protocol": proto, "port": int(port)} for proto, port in policy.LISTENS],
            "outbound": outbound}


def board_settings(board) -> dict[str, Any]:
    """The settings an emulated board keeps in its NVS (read off its flash).
    They include the Wi-Fi passphrase: use them, never print them."""
    from sbd_harness.emulator.nvs_reader import read_store
    if getattr(board, "kind", "") != "emulated":
        raise MudError("only an emulated board's settings can be read off its flash: give --broker ADDR:PORT")
    raw = read_store(board.flash_image().read_partition("nvs")).get(("sbd", "config"))
    if not raw:
        raise MudError(f"board {board.name} holds no settings: provision it first (sbd provision)")
    return json.loads(raw)


def _peer_match(host: str, direction: str) -> dict[str, Any]:
    """The ACE `matches` naming the far end: an address, a DNS name, or the local network."""
    side = "destination" if direction == "from" else "source"
    if host == "":
        return {"ietf-mud:mud": {"local-networks": [None]}}
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return {"ipv4": {f"ietf-acldns:{'dst' if direction == 'from' else 'src'}-dnsname": host}}
    return {"ipv4": {f"{side}-ipv4-network": f"{host}/32"}}


def _ace(name: str, flow: dict[str, Any], direction: str) -> dict[str, Any]:
    """One access-control entry; `direction` "from" (device to peer) or "to" (peer to device)."""
    proto = flow["protocol"]
    matches = _peer_match(flow.get("host", ""), direction) if "host" in flow else {}
    matches.setdefault("ipv4", {})["protocol"] = PROTOCOLS[proto]
    outbound = "host" in flow
    # The peer's port is the destination going out, the source coming back;
    # for a listener, the device's port is the other way round.
    port_side = "destination-port" if (direction == "from") == outbound else "source-port"
    layer: dict[str, Any] = {port_side: {"operator": "eq", "port": flow["port"]}}
    if proto == "tcp":
        layer["ietf-mud:direction-initiated"] = "from-device" if outbound else "to-device"
    matches[proto] = layer
    return {"name": name, "matches": matches, "actions": {"forwarding": "accept"}}


def build(decl: dict[str, Any], last_update: dt.datetime | None = None) -> dict[str, Any]:
    """The MUD file (a JSON object) for a declaration."""
    model = decl["model"]
    acl_from, acl_to = f"mud-{model}-v4fr", f"mud-{model}-v4to"
    from_aces, to_aces = [], []
    for i, flow in enumerate(decl["outbound"]):
        from_aces.append(_ace(f"{flow['purpose']}{i}-frdev", flow, "from"))
        to_aces.append(_ace(f"{flow['purpose']}{i}-todev", flow, "to"))
    for i, listen in enumerate(decl["listens"]):
        to_aces.append(_ace(f"listen{i}-todev", listen, "to"))
        from_aces.append(_ace(f"listen{i}-frdev", listen, "from"))
    when = (last_update or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    return {
        "ietf-mud:mud": {
            "mud-version": 1,
            "mud-url": decl["mud_url"],
            "last-update": when.isoformat(),
            "cache-validity": CACHE_VALIDITY_HOURS,
            "is-supported": True,
            "systeminfo": f"{model} {decl['fw_version']}: security-by-design reference firmware for ESP32",
            "model-name": model,
            "firmware-rev": decl["fw_version"],
            "from-device-policy": {"access-lists": {"access-list": [{"name": acl_from}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": acl_to}]}},
        },
        "ietf-access-control-list:acls": {"acl": [
            {"name": acl_from, "type": "ipv4-acl-type", "aces": {"ace": from_aces}},
            {"name": acl_to, "type": "ipv4-acl-type", "aces": {"ace": to_aces}},
        ]},
    }


def _policy_aces(mud: dict[str, Any], policy: str) -> list[dict[str, Any]]:
    try:
        names = {a["name"] for a in mud["ietf-mud:mud"][policy]["access-lists"]["access-list"]}
        acls = mud["ietf-access-control-list:acls"]["acl"]
    except (KeyError, TypeError) as exc:
        raise MudError(f"not a MUD file: no {exc}") from exc
    return [ace for acl in acls if acl.get("name") in names for ace in acl.get("aces", {}).get("ace", [])
            if ace.get("actions", {}).get("forwarding") == "accept"]


def allows_from_device(mud: dict[str, Any], protocol: str, address: str, port: int,
                       local_network: ipaddress.IPv4Network | None = None) -> bool:
    """Whether the MUD file lets the device open this flow (protocol, peer address, peer port)."""
    for ace in _policy_aces(mud, "from-device-policy"):
        m = ace.get("matches", {})
        ipv4, layer = m.get("ipv4", {}), m.get(protocol)
        if ipv4.get("protocol") != PROTOCOLS[protocol] or not isinstance(layer, dict):
            continue
        dport = layer.get("destination-port")
        if not dport or dport.get("operator") != "eq" or dport.get("port") != port:
            continue
        if protocol == "tcp" and layer.get("ietf-mud:direction-initiated", "from-device") != "from-device":
            continue
        net = ipv4.get("destination-ipv4-network")
        if net and ipaddress.IPv4Address(address) in ipaddress.IPv4Network(net, strict=False):
            return True
        local = m.get("ietf-mud:mud", {}).get("local-networks")
        if local is not None and local_network is not None and ipaddress.IPv4Address(address) in local_network:
            return True
    return False


def listening_ports(mud: dict[str, Any]) -> list[tuple[str, int]]:
    """(protocol, port) the MUD file lets others open connections or send datagrams to."""
    out = []
    for ace in _policy_aces(mud, "to-device-policy"):
        m = ace.get("matches", {})
        for proto in PROTOCOLS:
            layer = m.get(proto)
            if not isinstance(layer, dict) or "destination-port" not in layer:
                continue
            if proto == "tcp" and layer.get("ietf-mud:direction-initiated") != "to-device":
                continue
            out.append((proto, int(layer["destination-port"]["port"])))
    return sorted(set(out))


def write(mud: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mud, indent=2) + "\n")
