"""What the labs lean on, without a board: `sbd ota inspect` tells an update signed by somebody
else's key (valid signature, untrusted key) from a forged one, verdict first; `sbd flash --without`
leaves one mistake (and those built on it) out of the insecure build."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbd_harness.release import ota, profiles
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.ota import ReleaseKey
from sbd_harness.release.signer import candidates, signer

INSECURE = profiles.PROFILES["insecure"]


def test_the_signer_is_recovered_from_its_signature(tmp_path):
    for i in range(4):
        key = ReleaseKey.generate(tmp_path / f"k{i}.pem")
        data = f"manifest {i}".encode()
        signature = key.sign(data)
        assert key.public_point in candidates(data, signature)
        assert signer(data, key.key_id, signature) == key.public_point
        # the same signature over other bytes, or under another key ID, names no signer
        assert signer(data + b" ", key.key_id, signature) is None
        assert signer(data, bytes(8), signature) is None
    broken = bytearray(signature)
    broken[-1] ^= 1
    assert signer(data, key.key_id, bytes(broken)) is None
    assert candidates(data, bytes(64)) == [] and candidates(data, b"short") == []


def _inspect(state: Path, *args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "ota", "inspect", *args], capture_output=True,
                          text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if k != "SBD_RELEASE_KEY"},
                               "SBD_STATE_DIR": str(state)})
    return proc.returncode, proc.stdout


def test_inspect_says_valid_signature_untrusted_key_first(tmp_path):
    lab = ReleaseKey.generate(tmp_path / "release/release-key.pem")  # where SBD_STATE_DIR puts it
    mallory = ReleaseKey.generate(tmp_path / "mallory.pem")
    bundle = FirmwareBundle.from_dir()
    manifest = ota.encode_manifest(ota.build_manifest(bundle, "mallory-1", 100))
    update = tmp_path / "mallory.sbdota"
    update.write_bytes(ota.build_stream(manifest, mallory, bundle.files))

    code, out = _inspect(tmp_path, str(update))
    assert code == 1
    assert out.lstrip("{\n ").startswith('"verdict": "refused: valid signature, untrusted key'), out[:300]
    report = json.loads(out)
    assert report["signature_valid"] and not report["key_trusted"] and not report["verified"]
    assert mallory.key_id.hex() in report["verdict"]

    # Against Mallory's own key it verifies; the lab key's own update verifies against the default.
    code, out = _inspect(tmp_path, str(update), "--key", str(mallory.path))
    assert code == 0 and json.loads(out)["verdict"].startswith("verified: valid signature, trusted key")
    assert lab.key_id != mallory.key_id

    # A signature that does not verify, under a key nobody trusts: not "valid".
    data = bytearray(update.read_bytes())
    at = data.index(mallory.key_id) + len(mallory.key_id)
    data[at + 5] ^= 0x40
    forged = tmp_path / "forged.sbdota"
    forged.write_bytes(bytes(data))
    code, out = _inspect(tmp_path, str(forged))
    report = json.loads(out)
    assert code == 1 and not report["signature_valid"]
    assert report["verdict"].startswith("refused: untrusted key") and "not valid" in report["verdict"]
    # ... and under the key it names, trusted: an invalid signature.
    code, out = _inspect(tmp_path, str(forged), "--key", str(mallory.path))
    assert code == 1 and json.loads(out)["verdict"].startswith("refused: trusted key, invalid signature")


def test_without_leaves_one_mistake_and_what_builds_on_it_out():
    every = list(INSECURE.mistakes)
    assert profiles.mistakes_without(INSECURE, ["open-console"]) == [m for m in every if m != "open-console"]
    # default-password is the shell's password: without the shell it goes too
    assert profiles.mistakes_without(INSECURE, ["open-port"]) == \
        [m for m in every if m not in ("open-port", "default-password")]
    assert profiles.mistakes_without(INSECURE, ["default-password"]) == \
        [m for m in every if m != "default-password"]
    assert profiles.mistakes_without(INSECURE, every) == []
    with pytest.raises(profiles.ProfileError, match=r"unknown mistakes \['open-door'\]"):
        profiles.mistakes_without(INSECURE, ["open-door"])
    with pytest.raises(profiles.ProfileError, match="the reference profile makes no mistakes"):
        profiles.mistakes_without(profiles.PROFILES["reference"], ["open-console"])


def test_flash_without_builds_every_other_mistake(tmp_path):
    def flash(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sbd_harness", "flash", "--board", "labs-no-such-board", *args],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SBD_STATE_DIR": str(tmp_path)})
    both = flash("--profile", "insecure", "--mistakes", "open-port", "--without", "open-console")
    assert both.returncode == 2 and "not both" in both.stderr
    unknown = flash("--profile", "insecure", "--without", "open-door")
    assert unknown.returncode == 2 and "unknown mistakes ['open-door']" in unknown.stderr
    # A good selection gets as far as the board (which does not exist), and no further.
    good = flash("--profile", "insecure", "--without", "open-console", "--build-dir", str(tmp_path / "b"))
    assert good.returncode == 2 and "labs-no-such-board" in good.stderr, good.stderr


def test_every_sbd_command_of_the_lab_pages_parses():
    """The lab pages' steps are run in tests/checks and tests/soak; here, without a board, every `sbd`
    line of their `sh` blocks parses as `sbd` parses it (options spelt as they are, no prefixes), and
    each page has the steps the runner expects: a check to find it, an exploit, a fix checked."""
    import argparse
    import contextlib
    import io

    from docsteps import sbd_commands
    from labsteps import LABS, blocks, readme_setup
    from sbd_harness.cli import build_parser

    def exact(parser: argparse.ArgumentParser) -> None:
        parser.allow_abbrev = False
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    exact(sub)

    parser = build_parser()
    exact(parser)
    setup = readme_setup()
    assert [b.script.split()[:3] for b in setup] == [["sbd", "pki", "init"], ["sbd", "board", "start"],
                                                     ["sbd", "flash", "--board"], ["sbd", "bootline", "--board"]]
    for page in sorted(LABS.glob("*.md")):
        steps = blocks(page)
        if page.name != "README.md":
            sections = {b.section for b in steps}
            assert {"Find it with the harness", "Exploit it", "Fix it"} <= sections, (page.name, sections)
            assert all(b.verifies for b in steps if b.section.startswith("Find it") and "verify" in b.script)
        for block in steps:
            for args in sbd_commands(block.script):
                args = args[:args.index("|")] if "|" in args else args  # what it pipes into is not sbd
                try:
                    with contextlib.redirect_stderr(io.StringIO()) as err:
                        parser.parse_args(args)
                except SystemExit:
                    pytest.fail(f"{page.name}: sbd {' '.join(args)}: {err.getvalue().strip()}")


def test_a_reserved_sequence_number_is_never_signed_again(tmp_path):
    """A forged command in a check carries a number the lab CA gives up: one the device wrongly obeys
    does not put its counter past the CA's, so the CA's next command is still fresh to it."""
    import base64

    from sbd_harness.identity.pki import LabCA, PKIError

    ca = LabCA(tmp_path / "pki")
    ca.init()
    device = "0123456789ab"
    index = ca.index()
    index["devices"][device] = {"fingerprint": "00" * 32}
    ca._write_index(index)

    def seq_of(line: str) -> int:
        return json.loads(base64.b64decode(line.split()[1]))["seq"]

    first = seq_of(ca.sign_command(device, "status"))
    reserved = ca.reserve_seq(device)
    assert reserved == first + 1
    assert seq_of(ca.sign_command(device, "status")) == reserved + 1
    with pytest.raises(PKIError, match="no certificate issued"):
        ca.reserve_seq("ffffffffffff")
