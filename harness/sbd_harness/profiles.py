"""Build profiles of the firmware: the reference, and an insecure build for training labs.

`sbd flash --profile insecure` flashes a copy of the reference firmware that
makes the classic mistakes on purpose, each one named, documented
(docs/labs/<name>.md) and caught by the catalogue's checks, so a trainer can
let students find, exploit and fix one at a time (`--mistakes a,b` builds
with only those). The reference profile is the firmware as it is, and is the
default: nothing here changes it.

A mistake is a list of exact-text patches (file, old text, new text) plus
extra files shipped only by this profile (kept as package data in
profile_files/<profile>/). A patch whose text is no longer in the firmware
fails the build with ProfileError instead of quietly building something
else. Every insecure build is labelled: the boot line's security state says
"profile": "insecure", and the serial port shows
"INSECURE TRAINING BUILD - do not deploy" at every boot.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .paths import firmware_dir

Patch = tuple[str, str, str]  # (file relative to the firmware folder, exact old text, new text)
FILES_DIR = Path(__file__).resolve().parent / "profile_files"
MARKER = "profile.json"  # written into every build: what it is, and that it may be rebuilt over
WARNING = "INSECURE TRAINING BUILD - do not deploy"
DEFAULT_PROFILE = "reference"


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Mistake:
    name: str
    title: str
    checks: tuple[str, ...]          # catalogue check IDs that fail because of it
    provisions: dict[str, list[str]]  # what it breaks, IDs from provisions.py
    patches: tuple[Patch, ...] = ()
    files: tuple[str, ...] = ()      # extra files, relative to profile_files/<profile>/
    requires: tuple[str, ...] = ()   # mistakes it builds on

    @property
    def lab(self) -> str:
        return f"docs/labs/{self.name}.md"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    mistakes: dict[str, Mistake] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(self.mistakes) or self.name != DEFAULT_PROFILE


def apply_patches(root: Path, patches: Iterable[Patch], what: str) -> None:
    """Applies exact-text patches to the firmware copy in `root`, each once.

    Raises ProfileError naming `what` (a mistake or variant) when a file or a
    patch's old text is missing: the firmware changed and the patch with it
    must be reviewed.
    """
    for rel, old, new in patches:
        path = root / rel
        if not path.is_file():
            raise ProfileError(f"{what}: no file {rel} in {root}")
        text = path.read_text()
        if old not in text:
            raise ProfileError(f"{what}: {rel} no longer contains {old!r}")
        path.write_text(text.replace(old, new, 1))


# The insecure profile ------------------------------------------------------------------
_BOOT_ANNOUNCE = "    boot_report.announce(state.summary())\n"

INSECURE_MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        "open-console",
        "The console is not locked: Ctrl-C on the serial port gives the REPL of a provisioned device",
        checks=("console-locked",),
        provisions={"etsi_en_303_645": ["5.6-4A"], "nist_ir_8259a": ["4"], "owasp_isvs": ["3.1.3"],
                    "eu_cra": ["I(2)(d)"]},
        patches=(
            # The device still goes online, so the network checks run on the same board;
            # but its loop leaves Ctrl-C on, and a Ctrl-C ends main.py into the REPL.
            ("lib/sbd/app.py", "    console.close()\n    _forget(",
             "    console.open()  # MISTAKE open-console: Ctrl-C still interrupts the locked loop\n    _forget("),
            ("lib/sbd/app.py", "        run_locked()\n    except BaseException as e:\n",
             "        run_locked()\n    except KeyboardInterrupt:\n"
             "        return  # MISTAKE open-console: main.py ends, and the REPL is open\n"
             "    except BaseException as e:\n"),
        )),
    Mistake(
        "open-port",
        "A plain-TCP debug shell listens on port 2323 of every locked device: Python on the device over the network",
        checks=("no-listening-ports",),
        provisions={"etsi_en_303_645": ["5.6-1", "5.6-5", "5.5-4"], "nist_ir_8259a": ["4"],
                    "eu_cra": ["I(2)(j)"]},
        patches=(
            ("lib/sbd/app.py", "    console.serve(on_line, commands.MAX_LINE + 1, tick=tick, period_ms=100)\n",
             "    from sbd import debug_shell  # MISTAKE open-port: a shell for anyone on the network\n"
             "    tick = debug_shell.start(tick)\n"
             "    console.serve(on_line, commands.MAX_LINE + 1, tick=tick, period_ms=100)\n"),
        ),
        files=("lib/sbd/debug_shell.py",)),
    Mistake(
        "default-password",
        'The debug shell\'s password is "admin", the same on every device',
        checks=("no-default-or-shared-secrets",),
        provisions={"etsi_en_303_645": ["5.1-1", "5.1-2", "5.4-3"], "uk_psti": ["Sch1(1)"],
                    "owasp_isvs": ["2.1.9", "2.1.10"], "eu_cra": ["I(2)(b)"]},
        patches=(
            ("lib/sbd/debug_shell.py", "PASSWORD = None  # no password set: every login is refused\n",
             'PASSWORD = "admin"  # MISTAKE default-password: the same password on every device\n'),
        ),
        requires=("open-port",)),
    Mistake(
        "no-cert-verification",
        "The device's TLS client does not verify the broker's certificate: any broker will do",
        checks=("rogue-brokers-refused",),
        provisions={"etsi_en_303_645": ["5.5-1"], "nist_ir_8259a": ["3"], "owasp_isvs": ["4.1.3"],
                    "eu_cra": ["I(2)(e)"]},
        patches=(
            ("lib/sbd/tls.py", "    ctx.verify_mode = ssl.CERT_REQUIRED\n", "    ctx.verify_mode = ssl.CERT_NONE\n"),
        )),
    Mistake(
        "unsigned-commands",
        "Commands are obeyed without checking their signature",
        checks=("invalid-commands-refused-over-mqtt", "commands-need-a-valid-signature"),
        provisions={"etsi_en_303_645": ["5.5-5"], "nist_ir_8259a": ["2"], "eu_cra": ["I(2)(d)"]},
        patches=(
            ("lib/sbd/commands.py",
             "    if not p256.verify(ca_public_key, hashlib.sha256(payload).digest(), signature):\n"
             "        raise CommandError(\"bad signature\")\n", ""),
        )),
    Mistake(
        "unsigned-updates",
        "Updates are installed without checking who signed them",
        checks=("unsigned-or-foreign-updates-refused",),
        provisions={"etsi_en_303_645": ["5.3-9", "5.3-10"], "nist_ir_8259a": ["5"], "owasp_isvs": ["3.4.3"],
                    "eu_cra": ["I(2)(f)"]},
        patches=(
            # manifest.check_signature serves the update receiver and the boot-time slot check alike
            ("lib/sbd/manifest.py",
             '    `keys`, of `digest` (the SHA-256 of the manifest\'s exact bytes)."""\n',
             '    `keys`, of `digest` (the SHA-256 of the manifest\'s exact bytes)."""\n'
             "    return  # MISTAKE unsigned-updates: any signature, any key\n"),
            ("lib/sbd/ota.py",
             "        if not slots.trusted_keys():\n"
             "            self._event(\"rejected\", error=\"no release keys\")\n            return\n",
             "        # MISTAKE unsigned-updates: no release key needed either\n"),
        )),
    Mistake(
        "no-anti-rollback",
        "Updates to an older version are installed: the security counter is not checked",
        checks=("update-rollback-refused",),
        provisions={"etsi_en_303_645": ["5.3-2"], "owasp_isvs": ["3.4.6"], "eu_cra": ["I(2)(c)"]},
        patches=(
            ("lib/sbd/ota.py",
             '        if m["security_counter"] <= slots.counter():\n'
             '            raise Rejected("rollback: security counter not higher")\n',
             "        pass  # broken: no anti-rollback, any signed release installs\n"),
        )),
)

PROFILES: dict[str, Profile] = {
    "reference": Profile("reference", "the reference firmware, as it is"),
    "insecure": Profile("insecure", "the reference with the classic mistakes, for training labs only",
                        {m.name: m for m in INSECURE_MISTAKES}),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r}: choose from {', '.join(PROFILES)}") from None


def select_mistakes(profile: Profile, names: Sequence[str] | None) -> list[Mistake]:
    """The mistakes to build, in the profile's order: all by default, else those named."""
    if names is None:
        return list(profile.mistakes.values())
    wanted = [n.strip() for n in names if n.strip()]
    if wanted and not profile.mistakes:
        raise ProfileError(f"the {profile.name} profile makes no mistakes")
    unknown = [n for n in wanted if n not in profile.mistakes]
    if unknown:
        raise ProfileError(f"unknown mistakes {unknown} in profile {profile.name}: "
                           f"choose from {', '.join(profile.mistakes)}")
    for n in wanted:
        missing = [r for r in profile.mistakes[n].requires if r not in wanted]
        if missing:
            raise ProfileError(f"mistake {n} builds on {', '.join(missing)}: add it to the list")
    return [m for m in profile.mistakes.values() if m.name in wanted]


def _label_patches(profile: Profile, mistakes: list[Mistake]) -> list[Patch]:
    listed = ", ".join(m.name for m in mistakes) or "none"
    return [
        ("lib/sbd/version.py", 'PROFILE = "reference"', f'PROFILE = "{profile.name}"'),
        ("lib/sbd/boot.py", _BOOT_ANNOUNCE,
         _BOOT_ANNOUNCE + f"    print({WARNING + ' (mistakes: ' + listed + ')'!r})\n"),
    ]


def _clear(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir() or (any(target.iterdir()) and not (target / MARKER).is_file()):
        raise ProfileError(f"{target} exists and is not an earlier profile build: choose another folder")
    shutil.rmtree(target)


def _patch(target: Path, profile: Profile, chosen: list[Mistake]) -> None:
    if profile.labelled:
        apply_patches(target, _label_patches(profile, chosen), f"the {profile.name} profile's label")
    for mistake in chosen:
        for rel in mistake.files:
            dest = target / rel
            if dest.exists():
                raise ProfileError(f"mistake {mistake.name}: the firmware already has {rel}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(FILES_DIR / profile.name / rel, dest)
        apply_patches(target, mistake.patches, f"mistake {mistake.name}")


def build(profile_name: str, target: Path, mistakes: Sequence[str] | None = None,
          source: Path | None = None) -> Path:
    """A copy of the firmware in `source` (default: the project's firmware/) in
    `target`, built for the profile with `mistakes` (default: all of them).

    The reference profile is a plain copy. `target`, if it exists, must be an
    earlier build (it holds profile.json); it is replaced.
    """
    profile = get_profile(profile_name)
    chosen = select_mistakes(profile, mistakes)
    source = Path(source) if source else firmware_dir()
    if not (source / "main.py").is_file() and not (source / "boot.py").is_file():
        raise ProfileError(f"{source} holds no boot.py or main.py: not a firmware folder")
    target = Path(target)
    if target.resolve() == source.resolve():
        raise ProfileError("the build folder cannot be the firmware folder itself")
    _clear(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", MARKER))
    try:
        _patch(target, profile, chosen)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # half a build is no build
        raise
    (target / MARKER).write_text(json.dumps({"profile": profile.name, "mistakes": [m.name for m in chosen],
                                             "source": str(source)}, indent=2) + "\n")
    return target


def read_marker(folder: Path) -> dict | None:
    """What an earlier build in `folder` was: {"profile", "mistakes", "source"}, or None."""
    path = Path(folder) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
