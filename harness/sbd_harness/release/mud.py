"""The device's Manufacturer Usage Description (RFC 8520), written from the
reviewed network policy.

The source of truth is data, not the firmware under test: the reviewed policy
`boards/network-policy.json` (`SBD_NETWORK_POLICY` names another), checked
into the repository and changed only by review. A firmware that opens a port
and also declares it in its own `sbd/network_policy.py` is still held to the
reviewed file, and nothing of the firmware is imported or run on the host
(where the checks run as root). The firmware's own module stays: the device
puts `mud_url()` in its birth message and sets its hostname from it; a test
compares it with the reviewed file (`firmware_declares`, read with `ast`, never
executed). The policy must be the product's: its model and MUD URL those of
the build (`product_policy`), so a product that leaves the reference's policy
in place is told so; the systeminfo and mfg-name come from the product's
declaration (features.json `product`: description, supplier). The policy is filled in with the device's settings (broker address
and port, NTP server), which for an emulated board the harness reads off its
flash, and the firmware's version (read as text from `lib/sbd/version.py`).
The birth message carries only the URL, not the whole policy: the device's
heap stays small, the MUD file can be written before a device ever connects,
and the checks compare the two (the URL in the birth message must be the
file's `mud-url`).

The file: an `ietf-mud:mud` container (mud-version 1, mud-url, last-update,
cache-validity, is-supported, systeminfo, the from-device and to-device
policies) and the `ietf-access-control-list:acls` they name. Outbound flows
are allowed only as initiated by the device; inbound, only to the ports the
policy lists (the official build's mDNS responder and DHCP client, UDP).
"""
from __future__ import annotations

import ast
import datetime as dt
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from sbd_harness.errors import SbdError
from sbd_harness.paths import boards_dir, firmware_dir

PROTOCOLS = {"tcp": 6, "udp": 17}
CACHE_VALIDITY_HOURS = 48  # RFC 8520's default
MUD_URL_OID = "1.3.6.1.5.5.7.1.25"  # id-pe-mud-url, RFC 8520 section 10
CONDITIONS = ("ntp_host", "ntp_host is a name")  # the `when` a reviewed flow may have


class MudError(SbdError, ValueError):
    """A policy, declaration or settings the MUD file cannot be written from."""


def policy_path() -> Path:
    """The reviewed policy: boards/network-policy.json, or the file SBD_NETWORK_POLICY names."""
    return Path(os.environ.get("SBD_NETWORK_POLICY", boards_dir() / "network-policy.json"))


def _port(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith("{"):
        return value
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise MudError(f"{where}: port {value!r} is not 1..65535")
    return value


def load_policy(path: Path | None = None) -> dict[str, Any]:
    """The reviewed policy, read as JSON data and checked for shape (never code)."""
    path = Path(path or policy_path())
    try:
        policy = json.loads(path.read_text())
    except FileNotFoundError:
        raise MudError(f"{path} does not exist: no reviewed network policy to hold the device to") from None
    except (OSError, ValueError) as exc:
        raise MudError(f"{path}: not a JSON policy: {exc}") from exc
    if not isinstance(policy, dict):
        raise MudError(f"{path}: not a JSON object")
    for key in ("model", "mud_url", "hostname", "listens", "outbound"):
        if key not in policy:
            raise MudError(f"{path}: no {key!r}")
    for i, item in enumerate(policy["listens"]):
        if item.get("protocol") not in PROTOCOLS or not item.get("why"):
            raise MudError(f"{path}: listens[{i}] needs a protocol (tcp or udp) and a reason (why)")
        _port(item.get("port"), f"{path}: listens[{i}]")
    for i, flow in enumerate(policy["outbound"]):
        if flow.get("protocol") not in PROTOCOLS or "host" not in flow or not flow.get("purpose"):
            raise MudError(f"{path}: outbound[{i}] needs a purpose, a protocol (tcp or udp) and a host")
        if flow.get("when") not in (None, *CONDITIONS):
            raise MudError(f"{path}: outbound[{i}]: unknown condition {flow['when']!r}")
        _port(flow.get("port"), f"{path}: outbound[{i}]")
    return policy


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _fill(value: Any, settings: dict[str, Any]) -> Any:
    """A policy value with its {placeholders} taken from the settings."""
    if isinstance(value, str) and "{" in value:
        try:
            filled = value.format(**settings)
        except (KeyError, IndexError, ValueError) as exc:
            raise MudError(f"the settings have no value for {value!r}: {exc}") from exc
        return int(filled) if filled.isdigit() else filled
    return value


def listening(policy: dict[str, Any]) -> set[tuple[str, int]]:
    """The (protocol, port) pairs the reviewed policy lets the device listen on."""
    return {(item["protocol"], int(item["port"])) for item in policy["listens"]}


def hostname(policy: dict[str, Any], device_id: str) -> str:
    """The name the device's mDNS responder answers for, per the reviewed policy."""
    return str(policy["hostname"]).format(device_id=device_id)


def firmware_version(firmware: Path | None = None) -> str:
    """VERSION from the firmware's lib/sbd/version.py, read as text (the file is not run)."""
    from sbd_harness.release.bundle import VERSION_RE
    path = Path(firmware or firmware_dir()) / "lib" / "sbd" / "version.py"
    try:
        m = VERSION_RE.search(path.read_text())
    except OSError as exc:
        raise MudError(f"{path}: {exc}") from exc
    if not m:
        raise MudError(f"{path} holds no VERSION = \"...\" line")
    return m.group(1)


def firmware_declares(firmware: Path | None = None) -> dict[str, Any] | None:
    """What the firmware's own sbd/network_policy.py says it listens on and its MUD URL
    base, read with `ast` (literal assignments only; nothing of it runs). None without
    the module. Evidence, and a test keeps it equal to the reviewed policy."""
    path = Path(firmware or firmware_dir()) / "lib" / "sbd" / "network_policy.py"
    if not path.is_file():
        return None
    found: dict[str, Any] = {}
    try:
        tree = ast.parse(path.read_text())
    except (SyntaxError, ValueError, OSError) as exc:
        return {"listens": None, "mud_base": None, "error": f"{type(exc).__name__}: {exc}"}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    try:
        listens = sorted((str(p), int(n)) for p, n in found["LISTENS"]) if "LISTENS" in found else None
    except (TypeError, ValueError):
        listens = None
    return {"listens": listens, "mud_base": found.get("MUD_BASE")}


def product_policy(firmware: Path | None = None, policy: dict[str, Any] | None = None):
    """The firmware folder's product (`release/product.py`) and the reviewed policy, which must be that
    product's (its model, its MUD URL): MudError naming the value when it is not, e.g. the reference's
    policy left in place for a product."""
    from sbd_harness.release.product import from_folder, policy_problem
    product = from_folder(Path(firmware or firmware_dir()))
    policy = policy if policy is not None else load_policy()
    problem = policy_problem(policy, product, str(policy_path()))
    if problem:
        raise MudError(problem)
    return product, policy


def declaration(settings: dict[str, Any], firmware: Path | None = None,
                policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the reviewed policy lets the device do with these settings."""
    product, policy = product_policy(firmware, policy)
    for key in ("broker_addr", "broker_port"):
        if key not in settings:
            raise MudError(f"the settings have no {key}: is the board provisioned with a broker?")
    ntp = settings.get("ntp_host") or ""
    holds = {"ntp_host": bool(ntp), "ntp_host is a name": bool(ntp) and not _is_ipv4(ntp)}
    values = dict(settings, ntp_host=ntp, ntp_port=settings.get("ntp_port") or 123)
    outbound = []
    for flow in policy["outbound"]:
        if flow.get("when") and not holds[flow["when"]]:
            continue
        outbound.append({"purpose": flow["purpose"], "protocol": flow["protocol"],
                         "host": _fill(flow["host"], values), "port": int(_fill(flow["port"], values)),
                         "tls": bool(flow.get("tls", False))})
    return {"mud_url": policy["mud_url"], "model": policy["model"], "fw_version": firmware_version(firmware),
            "name": product.name, "supplier": product.supplier, "documentation": product.docs_url,
            "systeminfo": product.description or product.name or product.model,
            "listens": [{"protocol": proto, "port": port} for proto, port in sorted(listening(policy))],
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
    about = {k: decl[d] for k, d in (("mfg-name", "supplier"), ("documentation", "documentation")) if decl.get(d)}
    return {
        "ietf-mud:mud": {
            "mud-version": 1,
            "mud-url": decl["mud_url"],
            "last-update": when.isoformat(),
            "cache-validity": CACHE_VALIDITY_HOURS,
            "is-supported": True,
            "systeminfo": f"{model} {decl['fw_version']}: {decl.get('systeminfo') or model}",
            **about,
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
