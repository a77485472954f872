# Authenticated commands: an operator command is accepted only when it is
# signed by the CA that provisioned this device, names this device and its
# current certificate (so nothing recorded before a factory reset and
# re-provisioning is valid after it), and carries a sequence number higher
# than any accepted before (no replay).
# Freshness: a command signed and held back (never delivered, delivered
# later) is still newer than the last one the device saw. So the commands
# that hand over the device (FRESH) must also carry the device's current
# challenge: a random nonce it hands out on request (an unsigned
# "SBD-CHALLENGE" line, on the console or the command topic), keeps in RAM
# only, accepts once and forgets after CHALLENGE_MS by the monotonic tick
# count (not the clock, which NTP or an attacker can move), at the next
# challenge and at every reset. A command signed before the challenge it
# names was issued cannot exist.
# The signature is checked before the command is even parsed, and every field
# is validated; anything else is refused and changes nothing.
# Provisions: ETSI EN 303 645 5.5-5 (security-relevant configuration only
# after authentication), 5.13-1A/5.13-1B (input validation); NIST IR 8259A 2
# (configuration only by authorised entities); EU CRA Annex I (2)(d), (2)(f)
# (integrity of commands).
import binascii
import hashlib
import json
import os
import time

PREFIX = b"SBD-CMD "
MAX_LINE = 1024
MAX_SEQ = 0x7FFFFFFF
NONCE_HEX = 32  # attest's nonce: 16 bytes chosen by the verifier, as lower-case hex
# name -> its arguments, every one required: a tuple (lo, hi) is an integer
# within those bounds, an int n a string of exactly n lower-case hex digits
COMMANDS = {
    "status": {},
    "factory_reset": {},
    "unlock_console": {},
    "set_interval": {"seconds": (1, 3600)},
    "attest": {"nonce": NONCE_HEX},
}
# Served on the serial console only: attest's reply (several KiB: a line per
# file) is larger than the packets the device's MQTT client takes
# (sbd.link.MAX_PACKET, 1536 bytes), and that limit keeps its receive buffer small.
CONSOLE_ONLY = ("attest",)
# Need the current challenge: they unlock the console or wipe the device.
# status and attest change nothing (attest carries the verifier's own nonce);
# set_interval only moves the telemetry pace within its bounds.
FRESH = ("factory_reset", "unlock_console")
CHALLENGE = b"SBD-CHALLENGE"
CHALLENGE_MS = 300000  # a challenge not used within 5 minutes is forgotten
_HEX = "0123456789abcdef"


class CommandError(Exception):
    pass


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def _b64decode(part):
    # MicroPython's a2b_base64 skips characters it does not know; be strict.
    if not part or len(part) % 4:
        raise CommandError("bad base64")
    for c in part:
        if c not in _B64:
            raise CommandError("bad base64")
    try:
        return binascii.a2b_base64(part)
    except ValueError:
        raise CommandError("bad base64")


def _valid_arg(rule, value):
    if isinstance(rule, tuple):
        return isinstance(value, int) and not isinstance(value, bool) and rule[0] <= value <= rule[1]
    if not isinstance(value, str) or len(value) != rule:
        return False
    for c in value:
        if c not in _HEX:
            return False
    return True


class Challenge:
    """The one challenge outstanding, in RAM only: a reset forgets it."""

    def __init__(self):
        self.nonce = None
        self.issued = 0

    def issue(self, now_ms):
        # os.urandom: the chip's hardware RNG (ports/esp32/mphalport.c)
        self.nonce = binascii.hexlify(os.urandom(NONCE_HEX // 2)).decode()
        self.issued = now_ms
        return self.nonce

    def current(self, now_ms):
        if self.nonce is not None and time.ticks_diff(now_ms, self.issued) > CHALLENGE_MS:
            self.nonce = None
        return self.nonce

    def spend(self):
        self.nonce = None


def parse(line, ca_public_key, device_id, last_seq, cert_sha256, challenge=None):
    """Returns (name, args, seq) of a valid command, or raises CommandError.
    challenge: the device's current one (Challenge.current), or None."""
    from sbd import p256
    if len(line) > MAX_LINE:
        raise CommandError("too long")
    if not line.startswith(PREFIX):
        raise CommandError("not a command")
    parts = line[len(PREFIX):].strip().split(b" ")
    if len(parts) != 2:
        raise CommandError("expected payload and signature")
    payload = _b64decode(parts[0])
    signature = _b64decode(parts[1])
    if not p256.verify(ca_public_key, hashlib.sha256(payload).digest(), signature):
        raise CommandError("bad signature")
    try:
        cmd = json.loads(payload)
    except ValueError:
        raise CommandError("bad json")
    if not isinstance(cmd, dict):
        raise CommandError("not an object")
    for key in cmd:
        if key not in ("cmd", "device", "cert", "seq", "args", "challenge"):
            raise CommandError("unknown field")
    if cmd.get("device") != device_id:
        raise CommandError("not for this device")
    if cmd.get("cert") != cert_sha256:
        raise CommandError("not for this certificate")
    seq = cmd.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= MAX_SEQ:
        raise CommandError("bad sequence number")
    if seq <= last_seq:
        raise CommandError("replayed")
    name = cmd.get("cmd")
    if name not in COMMANDS:
        raise CommandError("unknown command")
    args = cmd.get("args", {})
    if not isinstance(args, dict):
        raise CommandError("bad args")
    schema = COMMANDS[name]
    if len(args) != len(schema):
        raise CommandError("bad args")
    for key, value in args.items():
        if key not in schema or not _valid_arg(schema[key], value):
            raise CommandError("bad args")
    # freshness: checked whenever a challenge is named, required for FRESH
    if name in FRESH or "challenge" in cmd:
        if "challenge" not in cmd:
            raise CommandError("no challenge")
        if challenge is None or cmd["challenge"] != challenge:
            raise CommandError("stale challenge")
    return name, args, seq
