"""What docs/ci.md and docs/product.md tell a reader to run still exists, read from the pages: the
workflow parses and uses nothing but `run:` steps and GitHub's own actions, every `sbd` command line
in the pages parses with `sbd`'s own parser (each subcommand and option exists, none is missing a
value), every `make` target they name exists, and each message product.md's table quotes for a value
left at the reference's is what `sbd` says. The steps themselves run in tests/soak/test_docs_steps.py
(`make test-soak`: each runs the whole catalogue on an emulated board)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import pytest

from docsteps import DOCS, ROOT, _EXPR, fenced, inline_commands, sbd_commands, shell_lines, step_fragments, workflow
from product_fixture import build_product
from sbd_harness.cli import build_parser
from sbd_harness.release.product import from_folder, leftover, no_docs_reason, policy_problem

PAGES = (DOCS / "ci.md", DOCS / "product.md")
# What tests/soak/test_docs_steps.py gives the workflow in place of GitHub.
PROVIDED = {"github.workspace", "github.run_id", "steps.python.outputs.python-path"}
GITHUB_ONLY = {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}


def _scripts() -> list[tuple[str, str]]:
    """(where, shell text) of every command the two pages show: the workflow's and its fragments'
    `run:` steps, the fenced `sh` blocks and the commands in the running text."""
    flow = workflow()
    out = [(f"ci.md step {s['name']!r}", s["run"]) for s in flow["jobs"]["verify"]["steps"] if "run" in s]
    out += [(f"ci.md step {name!r}", s["run"]) for name, s in step_fragments().items() if "run" in s]
    out += [(f"{page.name} sh block", block) for page in PAGES for block in fenced(page, "sh")]
    out.append(("ci.md env SBD", flow["env"]["SBD"]))
    out += [(f"{page.name} text", command) for page in PAGES for command in inline_commands(page)]
    return out


def test_the_workflow_has_run_steps_and_githubs_own_actions_only():
    flow = workflow()
    steps = flow["jobs"]["verify"]["steps"] + list(step_fragments().values())
    kinds = {"run" if "run" in s else s["uses"].split("@")[0] for s in steps}
    assert kinds - {"run"} <= GITHUB_ONLY, kinds
    assert sum("run" in s for s in steps) >= 7
    env_keys = {f"env.{k}" for k in flow["env"]}
    used = {m.group(1) for s in steps for m in _EXPR.finditer(json.dumps(s))} | \
        {m.group(1) for v in flow["env"].values() for m in _EXPR.finditer(str(v))}
    # secrets.* are a private checkout's (an actions/checkout input the test never runs)
    assert {u for u in used if not u.startswith("secrets.")} <= PROVIDED | env_keys, used
    assert set(step_fragments()) == {"Your product's tests", "The harness",
                                     "Give the workspace back to the runner's user"}


def _subparser(parser, words: list[str]):
    """The (sub)parser `words` name, and the words after its name."""
    import argparse
    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0] not in subs[0].choices:
            break
        parser, words = subs[0].choices[words[0]], words[1:]
    return parser, words


def _no_abbreviations(parser) -> None:
    """An option the page spells must exist as spelt: argparse's prefix matching (`--check` for a
    `--checks`) would hide a rename."""
    import argparse
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def test_every_sbd_command_in_the_pages_parses():
    """A command the pages give whole (a step, a fenced block) parses as `sbd` would parse it; a command
    the running text mentions names a subcommand and options that exist."""
    parser = build_parser()
    _no_abbreviations(parser)
    seen = set()
    for where, script in _scripts():
        for args in sbd_commands(script):
            if where.endswith(" text"):
                if args[:1] == ["..."]:  # `sudo sbd ...`: any command
                    continue
                sub, rest = _subparser(parser, args)
                assert sub is not parser, f"{where}: sbd {' '.join(args)}: no such command"
                for word in rest:
                    if word.startswith("-"):
                        assert word in sub._option_string_actions, f"{where}: sbd {' '.join(args)}: no {word}"
                continue
            try:
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    parsed = parser.parse_args(args)
            except SystemExit:
                pytest.fail(f"{where}: sbd {' '.join(args)}: {err.getvalue().strip()}")
            assert callable(parsed.func)
            seen.add(tuple(a for a in args[:2] if not a.startswith("-")))
    # the ones a manufacturer's CI runs, given whole
    for command in (("board", "start"), ("flash",), ("pki", "init"), ("provision",), ("verify",), ("mud",),
                    ("board", "rm")):
        assert any(s[:len(command)] == command for s in seen), command


def test_every_make_target_the_pages_name_exists():
    targets = set()
    for _where, script in _scripts():
        for line in shell_lines(script):
            m = re.search(r"\bmake(?: -C \S+)? ([\w-]+)", line)
            if m:
                targets.add(m.group(1))
    assert {"setup-verify", "clean"} <= targets, targets
    for target in targets:
        proc = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"make {target}: {proc.stderr}"


def test_the_venv_paths_the_workflow_runs_exist():
    for where, script in _scripts():
        for path in re.findall(r"sbd/(\.venv/bin/\w+)", script):
            assert (ROOT / path).exists(), f"{where}: {path}"


def _table_quotes() -> dict[str, list[str]]:
    """product.md's "Every value and file": each row's quoted messages, from its last column."""
    text = (DOCS / "product.md").read_text()
    table = text[text.index("## Every value and file"):text.index("## The declaration")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("What", "---"):
            rows[cells[0]] = [q for q in re.findall(r"`([^`]+)`", cells[3]) if " " in q and len(q) > 25]
    return rows


def _said(quote: str, messages: list[str]) -> bool:
    """Whether one message holds the quote, its `...` standing for anything."""
    pattern = ".*?".join(re.escape(part.strip()) for part in quote.split("..."))
    return any(re.search(pattern, m, re.S) for m in messages)


def test_each_message_product_md_quotes_is_what_sbd_says(tmp_path):
    rows = _table_quotes()
    assert {"Documents' address", "End of support", "Your documents", "MUD base", "Network policy",
            "Declaration"} <= {r for r, q in rows.items() if q}, rows
    messages = []
    for key in ("DOCS_URL", "SUPPORT_UNTIL", "MUD_BASE"):
        messages.append(leftover(from_folder(build_product(tmp_path / key, leave=(key,)).firmware), key))
    product = build_product(tmp_path / "acme")
    messages.append(no_docs_reason(from_folder(product.firmware)))
    # what `sbd` itself says: a product's build with the reference's policy, then the reference's declaration
    env = {k: v for k, v in os.environ.items() if k not in ("SBD_NETWORK_POLICY", "SBD_DOCS_DIR")}
    lazy = build_product(tmp_path / "lazy", leave=("features.json",))
    for args in (["mud", "--broker", "192.0.2.1:8883", "--firmware", str(product.firmware)],
                 ["verify", "--board", "ci", "--firmware", str(lazy.firmware), "--docs", str(lazy.docs)]):
        proc = subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True,
                              timeout=60, env=env)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        messages.append(proc.stderr)
    ref_policy = json.loads((ROOT / "boards/network-policy.json").read_text())
    assert policy_problem(ref_policy, from_folder(product.firmware), "x") is not None
    for row, quotes in rows.items():
        for quote in quotes:
            assert _said(quote, messages), f"product.md, row {row!r}: nothing says {quote!r}"
