"""`sbd pki ...`, `sbd provision`, `sbd command`: the lab CA, per-device identities, signed commands."""
from __future__ import annotations

import argparse
import os
import sys

from sbd_harness.cli.common import CliError, add_pki, lab_ca, print_json, target, add_target
from sbd_harness.errors import EXIT_FAIL


# PKI and provisioning ---------------------------------------------------------------
def cmd_pki_init(args: argparse.Namespace) -> int:
    ca = lab_ca(args)
    made = not ca.exists()
    if made:
        ca.init()
    from sbd_harness.identity.pki import fingerprint
    if not made:  # never replaced: every device it certified would lose its broker and its commands
        print(f"sbd: a lab CA already exists in {ca.dir}: kept as it is", file=sys.stderr)
    print_json({"pki": str(ca.dir), "ca_certificate": str(ca.cert_path), "crl": str(ca.crl_path),
                 "ca_sha256": fingerprint(ca.certificate), "made": made})
    return 0


def cmd_pki_show(args: argparse.Namespace) -> int:
    ca = lab_ca(args)
    from sbd_harness.identity.pki import fingerprint
    index = ca.index()
    print_json({"pki": str(ca.dir), "ca_subject": ca.certificate.subject.rfc4514_string(),
                 "ca_sha256": fingerprint(ca.certificate),
                 "devices": {d: {"fingerprint": e["fingerprint"], "revoked": e["serial"] in index["revoked"]}
                             for d, e in index["devices"].items()}})
    return 0


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    ca = lab_ca(args)
    ca.revoke(args.device_id)
    print(f"revoked {args.device_id}; CRL: {ca.crl_path}")
    return 0


def ntp_endpoint(given: str | None) -> tuple[str, int]:
    """`--ntp HOST[:PORT]` as the settings' ntp_host and ntp_port ("" for none)."""
    host, sep, port = (given or "").partition(":")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise CliError(f"--ntp {given!r}: expected HOST or HOST:PORT, e.g. pool.ntp.org or 192.168.1.1:123")
    return host, int(port or 123)


def cmd_provision(args: argparse.Namespace) -> int:
    from sbd_harness.identity.provisioning import provision
    board = target(args)
    ca = lab_ca(args)
    if not ca.exists():
        raise CliError(f"no CA in {ca.dir}: run `sbd pki init` first")
    settings = None
    if args.wifi_ssid or args.broker:
        if not (args.wifi_ssid and args.broker and os.environ.get("SBD_WIFI_PSK")):
            raise CliError("give --wifi-ssid and --broker ADDR[:PORT], and the passphrase in SBD_WIFI_PSK")
        addr, _, port = args.broker.partition(":")
        ntp_host, ntp_port = ntp_endpoint(args.ntp)
        settings = {"wifi_ssid": args.wifi_ssid, "wifi_psk": os.environ["SBD_WIFI_PSK"], "broker_addr": addr,
                    "broker_port": int(port or 8883), "ntp_host": ntp_host, "ntp_port": ntp_port}
    result = provision(board, ca, lock=not args.no_lock, settings=settings, reissue=args.reissue)
    if result.release_key_made:
        print(f"sbd: made the lab release key {result.release_key_made} (first use); the device now trusts it "
              "for signed updates (sbd ota build signs with it)", file=sys.stderr)
    cert = result.issued.certificate
    print_json({"device_id": result.device_id, "subject": cert.subject.rfc4514_string(),
                 "fingerprint_sha256": result.issued.fingerprint, "serial": format(cert.serial_number, "x"),
                 "not_after": cert.not_valid_after_utc.isoformat(), "locked": not args.no_lock,
                 "boot_line": result.boot_line})
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    from sbd_harness.identity.commands import console_command, recorded_device_id
    board = target(args)
    ca = lab_ca(args)
    device_id = recorded_device_id(board, args.device)
    reply = console_command(board, ca, device_id, args.name, follow="status" if args.name == "status" else None)
    print_json(reply)
    return 0 if reply.get("ok") else EXIT_FAIL


def add_commands(sub: argparse._SubParsersAction) -> None:
    pki = sub.add_parser("pki", help="the lab CA").add_subparsers(dest="action", required=True)
    for name, fn, helptext in (("init", cmd_pki_init, "create the lab CA (P-256), its CRL and index"),
                               ("show", cmd_pki_show, "the CA and the devices it certified")):
        p = pki.add_parser(name, help=helptext)
        add_pki(p)
        p.set_defaults(func=fn)
    p = pki.add_parser("revoke", help="revoke a device's certificate and rewrite the CRL")
    p.add_argument("device_id")
    add_pki(p)
    p.set_defaults(func=cmd_pki_revoke)

    p = sub.add_parser("provision", help="certify an unprovisioned board's own key, then lock its console")
    add_target(p)
    add_pki(p)
    p.add_argument("--no-lock", action="store_true", help="leave the console open (development only)")
    p.add_argument("--reissue", action="store_true",
                   help="the board was factory-reset: issue a new certificate for its ID and revoke the valid "
                        "one it had (without it, an ID that has a valid certificate is refused)")
    p.add_argument("--wifi-ssid", help="real boards: the Wi-Fi network (passphrase in SBD_WIFI_PSK)")
    p.add_argument("--broker", help="real boards: the broker's IPv4 address[:port] (default port 8883)")
    p.add_argument("--ntp", default="pool.ntp.org", metavar="HOST[:PORT]",
                   help="with --broker: the NTP server that sets the clock before TLS (default pool.ntp.org, "
                        "port 123; an emulated board without --broker gets the lab's)")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("command", help="send a command signed by the lab CA to a locked board")
    add_target(p)
    p.add_argument("name", choices=["status", "factory_reset", "unlock_console"])
    p.add_argument("--device", help="the device ID on record (required for a real board; an emulated board's is "
                   "its own). A board that says it is another device is refused")
    add_pki(p)
    p.set_defaults(func=cmd_command)

