# MicroPython unit tests of the signed-command parser (sbd.commands).
import binascii
import hashlib
import json
from sbd import commands, p256

CA_SK = binascii.unhexlify("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")
CA_PK = p256.public_key(CA_SK)
OTHER_SK = binascii.unhexlify("519b423d715f8b581f4fa8ee59f4771a5b44c8130b4e3eacca54a56dda72b464")
DEVICE = "240ac4010203"
CERT = "ab" * 32


def line(body, sk=CA_SK, raw=None):
    if isinstance(body, dict) and "cert" not in body:
        body = dict(body, cert=CERT)
    payload = raw if raw is not None else json.dumps(body).encode()
    sig = p256.sign(sk, hashlib.sha256(payload).digest())
    return (commands.PREFIX + binascii.b2a_base64(payload).strip() + b" "
            + binascii.b2a_base64(sig).strip())


def refused(text, reason):
    try:
        commands.parse(text, CA_PK, DEVICE, 10, CERT)
    except commands.CommandError as e:
        assert str(e) == reason, (str(e), reason)
        return
    raise AssertionError("accepted: %r" % text[:60])


def test_a_valid_command_is_accepted():
    assert commands.parse(line({"cmd": "status", "device": DEVICE, "seq": 11}), CA_PK, DEVICE, 10, CERT) \
        == ("status", {}, 11)


def test_a_command_for_an_earlier_certificate_is_refused():
    # recorded before a factory reset and re-provisioning: same device, older certificate
    refused(line({"cmd": "unlock_console", "device": DEVICE, "seq": 11, "cert": "cd" * 32}),
            "not for this certificate")


def test_signature_is_checked_first():
    refused(line({"cmd": "status", "device": DEVICE, "seq": 11}, sk=OTHER_SK), "bad signature")
    good = line({"cmd": "status", "device": DEVICE, "seq": 11})
    payload, sig = good[len(commands.PREFIX):].split(b" ")
    tampered = binascii.a2b_base64(payload).replace(b"11", b"99")
    refused(commands.PREFIX + binascii.b2a_base64(tampered).strip() + b" " + sig, "bad signature")


def test_replay_and_sequence_rules():
    refused(line({"cmd": "status", "device": DEVICE, "seq": 10}), "replayed")
    refused(line({"cmd": "status", "device": DEVICE, "seq": 3}), "replayed")
    for seq in (0, -1, 2 ** 31, "11", 1.5, True, None):
        refused(line({"cmd": "status", "device": DEVICE, "seq": seq}), "bad sequence number")


def test_fields_are_validated():
    refused(line({"cmd": "status", "device": "000000000000", "seq": 11}), "not for this device")
    refused(line({"cmd": "reboot_into_repl", "device": DEVICE, "seq": 11}), "unknown command")
    refused(line({"cmd": "status", "device": DEVICE, "seq": 11, "args": {"x": 1}}), "bad args")
    refused(line({"cmd": "status", "device": DEVICE, "seq": 11, "args": [1]}), "bad args")
    refused(line({"cmd": "status", "device": DEVICE, "seq": 11, "extra": 1}), "unknown field")
    refused(line(None, raw=b"[1, 2, 3]"), "not an object")
    refused(line(None, raw=b"{not json"), "bad json")


def test_set_interval_takes_exactly_one_bounded_integer():
    ok = line({"cmd": "set_interval", "device": DEVICE, "seq": 11, "args": {"seconds": 5}})
    assert commands.parse(ok, CA_PK, DEVICE, 10, CERT) == ("set_interval", {"seconds": 5}, 11)
    for args in ({}, {"seconds": 0}, {"seconds": 3601}, {"seconds": "5"}, {"seconds": True},
                 {"seconds": 5.0}, {"seconds": 5, "x": 1}, {"secs": 5}):
        refused(line({"cmd": "set_interval", "device": DEVICE, "seq": 11, "args": args}), "bad args")


def test_framing_errors():
    refused(b"SBD-CMD onlyonepart", "expected payload and signature")
    refused(b"SBD-CMD a b c", "expected payload and signature")
    refused(b"HELLO " + b"x" * 10, "not a command")
    refused(commands.PREFIX + b"!!!! ****", "bad base64")
    refused(commands.PREFIX + b"A" * (commands.MAX_LINE + 1), "too long")
    refused(commands.PREFIX + b"AAAA AAAA", "bad signature")  # decodes, but 3-byte "signature"


def test_attest_takes_exactly_one_nonce_of_32_lower_case_hex_digits():
    nonce = "0123456789abcdef0123456789abcdef"
    ok = line({"cmd": "attest", "device": DEVICE, "seq": 11, "args": {"nonce": nonce}})
    assert commands.parse(ok, CA_PK, DEVICE, 10, CERT) == ("attest", {"nonce": nonce}, 11)
    assert commands.parse(line({"cmd": "attest", "device": DEVICE, "seq": 11, "args": {"nonce": "f" * 32}}),
                          CA_PK, DEVICE, 10, CERT)[1] == {"nonce": "f" * 32}
    for args in (None, {}, {"nonce": nonce[:-1]}, {"nonce": nonce + "0"}, {"nonce": ""},
                 {"nonce": nonce.upper()}, {"nonce": "0123456789ABCDEF0123456789abcdef"},
                 {"nonce": "g" + nonce[1:]}, {"nonce": " " + nonce[1:]}, {"nonce": nonce[:-1] + "\n"},
                 {"nonce": "0x" + nonce[2:]}, {"nonce": "-" + nonce[1:]}, {"nonce": "\u00e9" + nonce[2:]},
                 {"nonce": 12345}, {"nonce": True}, {"nonce": None}, {"nonce": [nonce]}, {"nonce": {"v": nonce}},
                 {"nonce": nonce, "x": 1}, {"challenge": nonce}, [nonce]):
        body = {"cmd": "attest", "device": DEVICE, "seq": 11}
        if args is not None:
            body["args"] = args
        refused(line(body), "bad args")



NONCE = "00112233445566778899aabbccddeeff"


def parse_fresh(text, challenge):
    return commands.parse(text, CA_PK, DEVICE, 10, CERT, challenge)


def refused_fresh(text, challenge, reason):
    try:
        parse_fresh(text, challenge)
    except commands.CommandError as e:
        assert str(e) == reason, (str(e), reason)
        return
    raise AssertionError("accepted: %r" % text[:60])


def test_unlock_and_factory_reset_need_the_current_challenge():
    for name in ("unlock_console", "factory_reset"):
        body = {"cmd": name, "device": DEVICE, "seq": 11}
        # held back: signed with a valid, newer sequence number but no challenge
        refused_fresh(line(body), NONCE, "no challenge")
        refused_fresh(line(body), None, "no challenge")
        # signed for a challenge the device no longer holds (an earlier one, or none since a reset)
        refused_fresh(line(dict(body, challenge="ff" * 16)), NONCE, "stale challenge")
        refused_fresh(line(dict(body, challenge=NONCE)), None, "stale challenge")
        for wrong in (NONCE.upper(), NONCE[:-1], 0, None, [NONCE]):
            refused_fresh(line(dict(body, challenge=wrong)), NONCE, "stale challenge")
        assert parse_fresh(line(dict(body, challenge=NONCE)), NONCE) == (name, {}, 11)


def test_other_commands_need_no_challenge_but_a_named_one_must_be_current():
    assert parse_fresh(line({"cmd": "status", "device": DEVICE, "seq": 11}), None) == ("status", {}, 11)
    body = {"cmd": "set_interval", "device": DEVICE, "seq": 11, "args": {"seconds": 5}}
    assert parse_fresh(line(dict(body, challenge=NONCE)), NONCE)[0] == "set_interval"
    refused_fresh(line(dict(body, challenge=NONCE)), None, "stale challenge")


def test_the_sequence_number_is_still_checked_with_a_current_challenge():
    refused_fresh(line({"cmd": "unlock_console", "device": DEVICE, "seq": 10, "challenge": NONCE}), NONCE,
                  "replayed")


def test_a_challenge_is_random_used_once_and_forgotten_after_its_time():
    import time
    c = commands.Challenge()
    assert c.current(0) is None  # a fresh boot holds none
    first = c.issue(1000)
    assert len(first) == commands.NONCE_HEX and all(ch in "0123456789abcdef" for ch in first)
    assert c.current(1000 + commands.CHALLENGE_MS) == first
    second = c.issue(2000)
    assert second != first and c.current(2000) == second  # a new one replaces the old
    c.spend()
    assert c.current(2000) is None
    third = c.issue(5000)
    assert c.current(time.ticks_add(5000, commands.CHALLENGE_MS + 1)) is None
    assert c.current(5000) is None  # once forgotten, gone
    assert len({commands.Challenge().issue(0) for _ in range(20)}) == 20
    # the tick counter wraps: the age is taken with ticks_diff
    near_wrap = time.ticks_add(0, -500)
    c.issue(near_wrap)
    assert c.current(time.ticks_add(near_wrap, 1000)) is not None
    assert third
