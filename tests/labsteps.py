"""The steps of the labs (docs/labs/), read from the pages and run as a student types them.

A lab is the setup of docs/labs/README.md (the lab CA, one emulated board `lab1`, the insecure build
flashed and provisioned, its label) and then every fenced `sh` block of the lab's page, in order, in
one workspace: a harness checkout (tests/docsteps.py) whose `build/` and `reports/` are the run's own.
A block runs whole in `bash -e` (heredocs and all), with the board's own address and serial port in
place of the example ones the pages show (`198.18.0.11`, `/dev/pts/5`: "the address in `sbd board
list`"). A block the page says to run "in a second terminal" runs while the block before it runs.

What a block must show is read from the page too: a `sbd verify` under "Find it" exits 1 and fails
each check it names, one under "Fix it" exits 0 and passes them, every other block exits 0; a plain
fenced block right after a `sbd verify` block quotes lines `<check> FAIL ... <message>`, and each
piece of the message between elisions (`...`, `…`) is in that check's message in the report. The
test of each lab adds what its exploit must have done (a key read, a console opened).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from docsteps import DOCS, harness_checkout, runner_env, sbd_commands

LABS = DOCS / "labs"
BOARD = "lab1"                       # the name every page uses
EXAMPLE_ADDRESS = "198.18.0.11"      # the example address the pages show
EXAMPLE_SERIAL = "/dev/pts/5"        # the example serial port
# README steps a test environment has already done: `make test` made the virtualenv and runs in it.
DONE_BY_MAKE_TEST = ("make setup", ". .venv/bin/activate")


@dataclass
class Block:
    """One fenced `sh` block: where it is, what it runs, and the plain block quoted right after it."""
    page: str
    section: str
    script: str
    second_terminal: bool = False
    quoted: str | None = None

    @property
    def verifies(self) -> list[list[str]]:
        return [words for words in sbd_commands(self.script) if words[:1] == ["verify"]]


def blocks(page: Path) -> list[Block]:
    """The `sh` blocks of a page in order, each with its `## ` section."""
    text = page.read_text()
    out: list[Block] = []
    section, last_end = "", 0
    fence = re.compile(r"^```(\w*)\n(.*?)^```\n?", re.M | re.S)
    for m in fence.finditer(text):
        between = text[last_end:m.start()]
        headings = re.findall(r"^##+ (.+)$", between, re.M)
        if headings:
            section = headings[-1].strip()
        if m.group(1) == "sh":
            out.append(Block(page.name, section, m.group(2), "second terminal" in between))
        elif m.group(1) == "" and out and out[-1].verifies and out[-1].quoted is None \
                and quoted_failures(m.group(2)):
            out[-1].quoted = m.group(2)
        last_end = m.end()
    return out


def readme_setup() -> list[Block]:
    """The steps docs/labs/README.md gives before any lab: the setup's `sbd` lines, the board, the
    insecure build and its label."""
    every = blocks(LABS / "README.md")
    setup = next(b for b in every if b.section == "Setup (once per laptop)")
    lines = [line for line in setup.script.splitlines() if line.split("#", 1)[0].strip()]
    for done in DONE_BY_MAKE_TEST:
        assert any(line.startswith(done) for line in lines), f"README's setup no longer runs {done!r}"
    setup.script = "\n".join(line for line in lines if not line.startswith(DONE_BY_MAKE_TEST)) + "\n"
    board = next(b for b in every if b.script.strip() == f"sbd board start {BOARD}")
    flash = next(b for b in every if b.section == "Flash the insecure profile"
                 and b.script.startswith(f"sbd flash --board {BOARD} --profile insecure\n"))
    label = next(b for b in every if b.script.startswith(f"sbd bootline --board {BOARD}"))
    return [setup, board, flash, label]


@dataclass
class Ran:
    block: Block
    code: int
    output: str
    seconds: float
    reports: list[dict] = field(default_factory=list)  # of its `sbd verify` runs


class LabRun:
    """A student's shell for one lab: a workspace, the harness on PATH, the board's own address."""

    def __init__(self, workspace: Path):
        self.dir = harness_checkout(workspace)
        self.env = runner_env({"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        self.address = self.serial = ""
        self.ran: list[Ran] = []

    def text(self, script: str) -> str:
        if self.address:
            script = script.replace(EXAMPLE_ADDRESS, self.address)
        if self.serial:
            script = script.replace(EXAMPLE_SERIAL, self.serial)
        return script

    def _start(self, block: Block) -> subprocess.Popen:
        return subprocess.Popen(["bash", "-e", "-c", self.text(block.script)], cwd=self.dir, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run(self, block: Block, second: Block | None = None, timeout: float = 900) -> list[Ran]:
        """Runs a block; with `second` (a block for a second terminal), runs that one while `block` runs."""
        if second is None:
            self.ran.append(self._one(block, timeout))
            return self.ran[-1:]
        started = time.monotonic()
        proc = self._start(block)
        time.sleep(2)  # the first terminal's command is listening before the second's starts
        here = self._one(second, timeout)
        out, _ = proc.communicate(timeout=timeout)
        self.ran += [Ran(block, proc.returncode, out, time.monotonic() - started), here]
        return self.ran[-2:]

    def _one(self, block: Block, timeout: float) -> Ran:
        started = time.monotonic()
        proc = self._start(block)
        out, _ = proc.communicate(timeout=timeout)
        ran = Ran(block, proc.returncode, out, time.monotonic() - started)
        for words in block.verifies:
            report = self.dir / "reports" / BOARD / ("report.selected.json" if "--check" in words else "report.json")
            assert report.is_file(), f"{block.page}: `sbd {shlex.join(words)}` wrote no report:\n{out[-3000:]}"
            ran.reports.append(json.loads(report.read_text()))
        if block.script.strip().startswith(f"sbd board start {BOARD}") and proc.returncode == 0:
            described = json.loads(out[out.index("{"):])
            self.address, self.serial = described["address"], described["serial"]
        return ran

    def after(self, ran: Ran, refused: tuple[str, ...] = ()) -> None:
        """What the page says of a block: its exit code and, for `sbd verify`, each named check's result.
        `refused`: commands the page shows refusing (exit 1), such as `sbd ota inspect` of a forged update."""
        block = ran.block
        where = f"{block.page}, {block.section!r}: {block.script.strip()[:200]}"
        finding = block.verifies and block.section.startswith("Find it")
        refusing = any(block.script.lstrip().startswith(r) for r in refused)
        assert ran.code == (1 if finding or refusing else 0), f"{where}\nexited {ran.code}:\n{ran.output[-4000:]}"
        for words, report in zip(block.verifies, ran.reports):
            named = [words[i + 1] for i, w in enumerate(words) if w == "--check"]
            status = {c["id"]: c for c in report["checks"]}
            want = "fail" if finding else "pass"
            got = {c: status[c]["status"] if c in status else "not run" for c in named}
            assert got == {c: want for c in named}, \
                f"{where}\n" + json.dumps({c: status.get(c, {}).get("message") for c in named}, indent=1)
            for check, message in quoted_failures(self.text(block.quoted or "")):
                for piece in re.split(r"\.\.\.|…", message):
                    assert piece.strip() in status[check]["message"], \
                        f"{block.page} quotes {piece.strip()!r} for {check}; the report says: {status[check]['message']}"

    def output(self, command: str) -> str:
        """The output of the lab page's last block that runs `command` (a line starting so)."""
        for ran in reversed(self.ran):
            if ran.block.page != "README.md" and \
                    any(line.strip().startswith(command) for line in self.text(ran.block.script).splitlines()):
                return ran.output
        raise AssertionError(f"no block runs {command!r}")

    def timings(self) -> str:
        return "\n".join(f"{r.seconds:6.1f}s {r.code:>3} {r.block.page}: {r.block.script.strip().splitlines()[0][:90]}"
                         for r in self.ran)


def quoted_failures(text: str) -> list[tuple[str, str]]:
    """(check, message) of each `<check>  FAIL  ... <message>` line a page quotes."""
    out = []
    for line in text.splitlines():
        m = re.match(r"([a-z0-9-]+)\s+FAIL\s+\.\.\.\s+(.*)$", line.strip())
        if m:
            out.append((m.group(1), m.group(2)))
    return out


# What each lab's exploit must have done, checked before "Fix it" erases the board. ------------------
def _board():
    from sbd_harness.boards.emulated import EmulatedBoard
    return EmulatedBoard(BOARD)


def device_key() -> str:
    """The device's private key, read off the emulated board's flash: what an exploit must show."""
    from sbd_harness.emulator.nvs_reader import read_store
    return read_store(_board().flash_image().read_partition("nvs"))[("sbd", "sk")].hex()


def _open_console(run: LabRun) -> None:
    assert device_key() in run.output("mpremote connect"), run.output("mpremote connect")[-2000:]


def _open_port(run: LabRun) -> None:
    assert "[2323]" in run.output("python -c"), run.output("python -c")[-2000:]
    assert "sbd debug shell - INSECURE TRAINING BUILD - do not deploy" in run.output("python - <<'EOF'")


def _default_password(run: LabRun) -> None:
    out = run.output("python - <<'EOF'")
    assert "the password is admin" in out and f"device private key: '{device_key()}'" in out, out[-2000:]


def _no_cert_verification(run: LabRun) -> None:
    out = run.output("openssl s_server")
    assert "CIPHER is ECDHE-ECDSA-" in out, out[-3000:]
    assert str(_board().conf["unique_id"]) in out, "no MQTT CONNECT with the device's ID reached the rogue broker"


def _unsigned_commands(run: LabRun) -> None:
    out = run.output("python - <<'EOF'")
    assert "{'sbd': 'cmd', 'ok': True, 'seq': 1000000, 'cmd': 'unlock_console'}" in out, out[-2000:]
    assert '"console": "open"' in run.output(f"sbd bootline --board {BOARD}")


def _unsigned_updates(run: LabRun) -> None:
    pushed = run.output("sbd ota build --key build/mallory.pem")
    assert "installed mallory-1 in slot a" in pushed and '"event": "committed"' in pushed, pushed[-3000:]
    assert '"fw_version": "mallory-1"' in run.output(f"sbd bootline --board {BOARD}")
    assert f"MALLORY WAS HERE, device key: {device_key()}" in run.output(f"sbd board log {BOARD}")
    inspected = run.output("sbd ota inspect")
    assert inspected.lstrip("{\n ").startswith('"verdict": "refused: valid signature, untrusted key'), inspected[:500]


def _no_anti_rollback(run: LabRun) -> None:
    out = run.output("sbd ota build --counter 2")
    assert out.count('"event": "committed"') == 2, out[-3000:]
    assert '"fw_version": "0.1.0"' in out


# Where each lab runs: `make test` (tests/checks/test_lab_pages.py), or the soak tier for those whose
# steps take longest (tests/soak/test_lab_pages.py): no-cert-verification's rogue broker waits out the
# device's connection (about 60 s), no-anti-rollback pushes updates, open-port scans every port twice.
# The four in `make test` take about 130 s on one worker (the file is one xdist unit: --dist loadfile).
IN_MAKE_TEST = ("open-console", "default-password", "unsigned-commands", "unsigned-updates")
IN_SOAK = ("open-port", "no-cert-verification", "no-anti-rollback")

EXPLOITED = {"open-console": _open_console, "open-port": _open_port, "default-password": _default_password,
             "no-cert-verification": _no_cert_verification, "unsigned-commands": _unsigned_commands,
             "unsigned-updates": _unsigned_updates, "no-anti-rollback": _no_anti_rollback}
REFUSED = ("sbd ota inspect",)  # a block the pages show exiting 1 (an update that does not verify)


def run_lab(name: str, workspace: Path) -> LabRun:
    """docs/labs/README.md's setup, then every step of docs/labs/<name>.md, each checked as the page
    says; the exploit's outcome checked before the fix. The board is removed at the end."""
    run = LabRun(workspace)
    steps = readme_setup() + blocks(LABS / f"{name}.md")
    assert any(b.section == "Fix it" for b in steps), f"{name}.md has no steps under 'Fix it'"
    try:
        exploited, i = False, 0
        while i < len(steps):
            block = steps[i]
            second = steps[i + 1] if i + 1 < len(steps) and steps[i + 1].second_terminal else None
            if block.section == "Fix it" and not exploited:
                EXPLOITED[name](run)
                exploited = True
            for done in run.run(block, second):
                run.after(done, REFUSED)
            i += 2 if second else 1
    finally:
        started = time.monotonic()
        subprocess.run(["sbd", "board", "rm", BOARD], cwd=run.dir, env=run.env, capture_output=True, timeout=120)
        print(run.timings() + f"\n{time.monotonic() - started:6.1f}s     sbd board rm {BOARD}")
    return run
