"""Build profiles of the firmware: the reference, and an insecure build for training labs.

`sbd flash --profile insecure` flashes a copy of the reference firmware that
makes the classic mistakes on purpose, each one named, documented
(docs/labs/<name>.md) and caught by the catalogue's checks, so a trainer can
let students find, exploit and fix one at a time (`--mistakes a,b` builds
with only those). The reference profile is the firmware as it is, and is the
default: nothing here changes it.

The mistakes come from the one catalogue (mistakes.py) that the project's
tests use too: exact-text patches plus extra files (package data in
mistake_files/). A patch whose text is no longer in the firmware fails the
build instead of quietly building something else. Every insecure build is labelled: the boot line's security state says
"profile": "insecure", and the serial port shows
"INSECURE TRAINING BUILD - do not deploy" at every boot.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from sbd_harness.paths import firmware_dir
from sbd_harness.release.mistakes import (_BOOT_ANNOUNCE, LAB_MISTAKES, Mistake, MistakeError, Patch, apply_patches,
                                          copy_files)

MARKER = "profile.json"  # written into every build: what it is, and that it may be rebuilt over
WARNING = "INSECURE TRAINING BUILD - do not deploy"
DEFAULT_PROFILE = "reference"


class ProfileError(MistakeError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    mistakes: dict[str, Mistake] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(self.mistakes) or self.name != DEFAULT_PROFILE


PROFILES: dict[str, Profile] = {
    "reference": Profile("reference", "the reference firmware, as it is"),
    "insecure": Profile("insecure", "the reference with the classic mistakes, for training labs only",
                        {m.name: m for m in LAB_MISTAKES}),
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


def mistakes_without(profile: Profile, names: Sequence[str]) -> list[str]:
    """Every mistake of the profile but those named and those that build on them (`--without open-port`
    leaves out default-password too: there is no shell left for its password), in the profile's order."""
    unwanted = {n.strip() for n in names if n.strip()}
    if not profile.mistakes:
        raise ProfileError(f"the {profile.name} profile makes no mistakes")
    unknown = sorted(unwanted - set(profile.mistakes))
    if unknown:
        raise ProfileError(f"unknown mistakes {unknown} in profile {profile.name}: "
                           f"choose from {', '.join(profile.mistakes)}")
    kept = []
    for name, mistake in profile.mistakes.items():  # requirements come before what builds on them
        if name not in unwanted and all(r in kept for r in mistake.requires):
            kept.append(name)
    return kept


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
        copy_files(target, mistake)
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
