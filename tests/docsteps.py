"""The steps docs/ci.md and docs/product.md tell a reader to run, read from the pages themselves.

`fenced(page, lang)` gives a page's fenced blocks; `workflow()` the GitHub Actions workflow of
docs/ci.md as a dict (PyYAML, which the harness's esptool already depends on); `sbd_commands(...)`
every `sbd ...` command line in shell text, with `$SBD` and `sudo ... sbd/.venv/bin/sbd` read as
`sbd`. `Job` runs a workflow's steps in a workspace as GitHub's runner would: `run:` steps with
`bash -e` in the workspace, `${{ ... }}` expressions replaced by what GitHub provides, the
`actions/...` steps done by the test (checkout) or left out (setup-python, upload-artifact)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def fenced(page: Path, lang: str) -> list[str]:
    """The fenced blocks of `page` in language `lang` (indented fences too, with their indent removed)."""
    out = []
    for m in re.finditer(r"^( *)```" + re.escape(lang) + r"\n(.*?)^\1```", page.read_text(), re.M | re.S):
        indent = len(m.group(1))
        out.append("".join(line[indent:] for line in m.group(2).splitlines(keepends=True)))
    return out


def inline_commands(page: Path) -> list[str]:
    """The commands a page gives in its running text: inline code that starts with `sbd`, `sudo` or
    `make` (a span may break across lines; fenced blocks are left out)."""
    text = re.sub(r"^( *)```.*?^\1```", "", page.read_text(), flags=re.M | re.S)
    spans = (" ".join(m.group(1).split()) for m in re.finditer(r"`([^`]+)`", text))
    return [s for s in spans if re.match(r"(sbd|sudo|make) ", s)]


def workflow(page: Path = DOCS / "ci.md") -> dict[str, Any]:
    whole = [yaml.safe_load(b) for b in fenced(page, "yaml")]
    found = [w for w in whole if isinstance(w, dict) and "jobs" in w]
    assert len(found) == 1, f"{page.name}: expected one whole workflow, found {len(found)}"
    return found[0]


def step_fragments(page: Path = DOCS / "ci.md") -> dict[str, dict[str, Any]]:
    """The workflow steps the page shows on their own (a list of one step each), by name."""
    out = {}
    for block in fenced(page, "yaml"):
        data = yaml.safe_load(block)
        if isinstance(data, list):
            for step in data:
                out[step["name"]] = step
    return out


def shell_lines(script: str) -> list[str]:
    """Logical lines of a shell script: continuations joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", script)
    lines = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return lines


def sbd_commands(script: str) -> list[list[str]]:
    """Each `sbd` invocation in shell text, as its arguments after `sbd` (several per line with `&&`)."""
    out = []
    for line in shell_lines(script):
        line = line.replace("$SBD", "sbd")
        for part in re.split(r"&&|\|\|", line):
            words = shlex.split(part)
            while words and (words[0] in ("sudo", "env") or "=" in words[0]):
                words = words[1:]
            if words and (words[0] == "sbd" or words[0].endswith("/bin/sbd")):
                out.append(words[1:])
    return out


_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def expand(text: str, context: dict[str, str]) -> str:
    """Replaces `${{ expr }}` by its value in `context`; an expression the test does not provide fails."""
    def one(m: re.Match) -> str:
        assert m.group(1) in context, f"the workflow uses ${{{{ {m.group(1)} }}}}, which the test does not provide"
        return context[m.group(1)]
    return _EXPR.sub(one, text)


@dataclass
class StepRun:
    name: str
    kind: str  # "run", or the action a `uses:` step names
    code: int | None = None  # None: not run (an action, or a step after a failure without if: always())
    seconds: float = 0.0
    output: str = ""


@dataclass
class Job:
    """One job of a workflow, run step by step in `workspace`."""
    workspace: Path
    context: dict[str, str]
    env: dict[str, str]
    actions: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    runs: list[StepRun] = field(default_factory=list)

    def run(self, steps: list[dict[str, Any]], timeout: float = 3600) -> list[StepRun]:
        failed = False
        for step in steps:
            name = step.get("name", "")
            condition = str(step.get("if", "success()"))
            assert condition in ("always()", "success()"), f"step {name!r}: if: {condition} is new to the test"
            if failed and condition != "always()":
                self.runs.append(StepRun(name, "run" if "run" in step else step["uses"]))
                continue
            if "uses" in step:
                action = step["uses"]
                assert action.startswith("actions/"), f"step {name!r} uses {action}: not a GitHub action"
                do = self.actions.get(action.split("@")[0])
                if do:
                    do({k: expand(str(v), self.context) for k, v in (step.get("with") or {}).items()})
                self.runs.append(StepRun(name, action))
                continue
            assert set(step) <= {"name", "run", "if", "id"}, f"step {name!r}: {sorted(step)} is new to the test"
            script = expand(step["run"], self.context)
            started = time.monotonic()
            proc = subprocess.run(["bash", "-e", "-c", script], cwd=self.workspace, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
            self.runs.append(StepRun(name, "run", proc.returncode, time.monotonic() - started, proc.stdout))
            failed = failed or proc.returncode != 0
        return self.runs

    def summary(self) -> str:
        return "\n".join(f"{r.code!s:>4} {r.seconds:6.1f}s {r.kind:28} {r.name}" for r in self.runs)

    def failures(self) -> str:
        return "\n\n".join(f"step {r.name!r} exited {r.code}:\n{r.output[-4000:]}"
                           for r in self.runs if r.code not in (0, None))


def harness_checkout(target: Path) -> Path:
    """The harness as `actions/checkout` puts it at `target`: a folder of links to this working tree's
    files (its .venv, already set up, among them), so the checkout's parent is the workspace (`../product`
    from inside it is the workspace's product) and `make -C` finds the environment `make setup` made."""
    target.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".sbd", "reports", "build"):
            (target / entry.name).symlink_to(entry)
    return target


def sudo_shim(bindir: Path, keep: dict[str, str]) -> Path:
    """`sudo` as on GitHub's runners, for a test already running as root: the command runs with the
    environment reset (sudo's env_reset: PATH, HOME and the like), but for `keep`, the variables that
    keep this test's boards, lab leases and broker apart from other test runs on the machine."""
    bindir.mkdir(parents=True, exist_ok=True)
    kept = " ".join(shlex.quote(f"{k}={v}") for k, v in keep.items())
    shim = bindir / "sudo"
    shim.write_text("#!/bin/sh\n"
                    f'exec env -i PATH="$PATH" HOME="${{HOME:-/root}}" LANG=C.UTF-8 {kept} "$@"\n')
    shim.chmod(0o755)
    return shim


# The variables of this test run that keep its boards and lab leases apart from other runs (tests/conftest.py).
ISOLATION = ("SBD_STATE_DIR", "SBD_LAB_LEASES")


def runner_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a reader's shell or a runner's step: the machine's, without the `SBD_*` settings
    of the test run (its broker port, CA, policy, documents) but those in ISOLATION."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("SBD_") and k not in ISOLATION) and k != "VIRTUAL_ENV"}
    env.update(extra or {})
    return env
