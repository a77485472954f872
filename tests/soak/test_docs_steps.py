"""docs/ci.md and docs/product.md, run as a reader runs them.

- The GitHub Actions workflow of docs/ci.md, read from the page, runs step by step in a workspace as
  the runner would run it: the manufacturer's repository is the product of tests/product_fixture.py,
  the harness checkout is this working tree (its environment already made by `make setup`, so
  `make -C sbd setup-verify` has nothing to install), `sudo` resets the environment as GitHub's does.
  The steps the page shows on their own go where it says: the product's own tests after "Install the
  harness", the step that gives the workspace back at the end. Every `run:` step must exit 0, and
  only `actions/...` steps are left to the test.
- The page's "Running the same thing locally" commands, as written, from the harness checkout.
- docs/product.md's "Checking it" commands, as written, on a board made ready by ci.md's steps.

Each runs the whole catalogue on an emulated board (`sbd verify` as written, no `--check`): minutes,
so this is the soak tier (`make test-soak`). What `make test` checks of the same pages without a
board: tests/unit/test_docs_steps.py."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from docsteps import (DOCS, ISOLATION, Job, expand, fenced, harness_checkout, runner_env, shell_lines,
                      step_fragments, sudo_shim, workflow)
from helpers import unexpected
from product_fixture import MODEL, NAME, SUPPLIER, VERSION, build_product

# What the job may leave to the runner: the actions a `uses:` step names.
GITHUB_ONLY = {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}
# The product's own test the workflow's "Your product's tests" step runs (docs/ci.md's example, for the
# fixture's product: its telemetry is the reference's, without the page's temperature).
PRODUCT_TEST = f'''
def test_my_product_goes_online(sbd_online):
    assert sbd_online.birth["model"] == "{MODEL}"
    reading = sbd_online.telemetry()
    assert "seq" in reading and "data" in reading
'''


def _isolation() -> dict[str, str]:
    """What keeps this test's boards and lab leases apart from other runs on the machine (conftest)."""
    return {k: os.environ[k] for k in ISOLATION if k in os.environ}


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    bindir = tmp_path / "bin"
    sudo_shim(bindir, _isolation())
    env = runner_env({"PATH": f"{bindir}:{os.environ['PATH']}"})
    yield ws, env
    # a step that failed before "Remove the board" leaves it behind, as on a runner
    subprocess.run([str(ws / "sbd/.venv/bin/sbd"), "board", "rm", "ci"], env={**env, **_isolation()},
                   capture_output=True, timeout=120)


def _emulated_skips(destructive: bool) -> set[str]:
    """The checks docs/ci.md ("Skips as policy") says skip on the emulated board, with or without
    --destructive."""
    text = (DOCS / "ci.md").read_text()
    section = " ".join(text[text.index("### Skips as policy"):text.index("### Selecting checks")].split())
    m = re.search(r"On the emulated board with `--destructive`, that is `([\w-]+)` alone.*?without "
                  r"`--destructive` add (.*?)\(", section)
    assert m, "ci.md no longer says which checks skip on the emulated board"
    return {m.group(1)} | (set(re.findall(r"`([\w-]+)`", m.group(2))) if not destructive else set())


def _check_report(report_path: Path, allowed_skips: set[str], accepted: frozenset[str] = frozenset()) -> dict:
    """What did not pass is what the page allows to skip and, with --accepted-failures, what it accepts
    failing (keys-at-rest-protected: the plaintext NVS of the official build and the emulated board)."""
    report = json.loads(report_path.read_text())
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert {c for c, s in statuses.items() if s != "pass"} == allowed_skips | accepted, unexpected(report)
    assert all(statuses[c] == "skip" for c in allowed_skips) and all(statuses[c] == "fail" for c in accepted)
    assert {k: report["product"][k] for k in ("model", "version", "name", "supplier", "reference")} == \
        {"model": MODEL, "version": VERSION, "name": NAME, "supplier": SUPPLIER, "reference": False}
    return report


def test_the_ci_workflow_runs_as_written(workspace, tmp_path):
    ws, env = workspace
    flow = workflow()
    steps = list(flow["jobs"]["verify"]["steps"])
    fragments = step_fragments()
    install = next(i for i, s in enumerate(steps) if s.get("name", "").startswith("Install the harness"))
    steps.insert(install + 1, fragments["Your product's tests"])
    steps.append(fragments["Give the workspace back to the runner's user"])

    context = {"github.workspace": str(ws), "github.run_id": "1",
               "steps.python.outputs.python-path": shutil.which("python3")}
    job_env = {}
    for key, value in flow.get("env", {}).items():
        context[f"env.{key}"] = job_env[key] = expand(str(value), context)
    summary = tmp_path / "step_summary.md"
    env = {**env, **job_env, "GITHUB_WORKSPACE": str(ws), "GITHUB_STEP_SUMMARY": str(summary),
           "CI": "true", "GITHUB_ACTIONS": "true"}

    def checkout(with_: dict) -> None:
        if "repository" in with_:  # the harness, at the commit the page pins: this working tree
            harness_checkout(ws / with_["path"])
        else:  # the manufacturer's own repository
            build_product(ws / with_["path"])
            (ws / with_["path"] / "tests").mkdir()
            (ws / with_["path"] / "tests/test_online.py").write_text(PRODUCT_TEST)

    job = Job(ws, context, env, actions={"actions/checkout": checkout})
    runs = job.run(steps)
    print(job.summary())
    assert {r.kind.split("@")[0] for r in runs if r.kind != "run"} <= GITHUB_ONLY
    own = next(r for r in runs if r.name == "Your product's tests")
    assert own.code == 0 and "1 passed" in own.output, own.output[-3000:]
    assert not job.failures(), job.failures()
    assert all(r.code == 0 for r in runs if r.kind == "run"), job.summary()

    # what the steps leave: the reports the upload step publishes, the run's summary page
    flags = next(s for s in steps if s.get("name") == "Run the checks")["run"]
    assert "--destructive" in flags and "--allowed-skips chip-security-fuses" in flags
    assert "--accepted-failures keys-at-rest-protected" in flags
    report = _check_report(ws / "reports/report.json", _emulated_skips(destructive=True),
                           frozenset({"keys-at-rest-protected"}))
    assert any(c["id"] == "factory-reset-erases-identity" and c["status"] == "pass" for c in report["checks"])
    for name in ("report.md", "report.html", "report.junit.xml", "report.sbom.cdx.json", "product.json",
                 "product.junit.xml"):
        assert (ws / "reports" / name).is_file(), name
    assert summary.read_text() == (ws / "reports/report.md").read_text()
    # The page's example is a plain test, not a check (only an sbd_check marker puts a test in the
    # conformance report): it passed in the step's JUnit XML, and the report claims nothing for it.
    product_tests = json.loads((ws / "reports/product.json").read_text())
    assert product_tests["checks"] == [], product_tests["checks"]
    suite = ET.parse(ws / "reports/product.junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == \
        ("1", "0", "0", "0"), ET.tostring(suite)[:2000]
    listed = subprocess.run([str(ws / "sbd/.venv/bin/sbd"), "board", "list", "--json"], env={**env, **_isolation()},
                            capture_output=True, text=True, timeout=60)
    assert "ci" not in [b["name"] for b in json.loads(listed.stdout)]


def _run_lines(lines: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Shell lines run one after another in one shell, as a reader types them; any failure fails."""
    proc = subprocess.run(["bash", "-e", "-x", "-c", "\n".join(lines)], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-6000:]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_running_the_same_thing_locally(workspace, tmp_path):
    ws, env = workspace
    build_product(ws / "product")
    sbd_dir = harness_checkout(ws / "sbd")
    text = (DOCS / "ci.md").read_text()
    section = text[text.index("\n## Running the same thing locally\n"):]
    blocks = [b for b in fenced(_write(tmp_path / "local.md", section), "sh")]
    assert len(blocks) == 1
    _run_lines(shell_lines(blocks[0]), sbd_dir, {**env, **_isolation()})
    _check_report(sbd_dir / "reports/report.json", _emulated_skips(destructive=False),
                  frozenset({"keys-at-rest-protected"}))


def test_products_checking_it_commands_run_as_written(workspace, tmp_path):
    """docs/product.md's commands, in CI after ci.md's steps made the board `ci` ready (as its workflow
    does: board start, flash, pki init, provision)."""
    ws, env = workspace
    build_product(ws / "product")
    harness_checkout(ws / "sbd")
    env = {**env, **_isolation(), "PATH": f"{ws / 'sbd/.venv/bin'}:{env['PATH']}"}
    text = (DOCS / "product.md").read_text()
    blocks = fenced(_write(tmp_path / "checking.md", text[text.index("\n## Checking it\n"):]), "sh")
    assert len(blocks) == 1
    ready = ["sbd board start ci", "sbd flash --board ci --firmware product/firmware",
             "sbd pki init", "sbd provision --board ci"]
    _run_lines(ready + shell_lines(blocks[0]) + ["sbd board rm ci"], ws, env)
    _check_report(ws / "reports/report.json", _emulated_skips(destructive=False),
                  frozenset({"keys-at-rest-protected"}))
    mud = json.loads((ws / "reports/mud.json").read_text())["ietf-mud:mud"]
    assert (mud["model-name"], mud["mfg-name"]) == (MODEL, SUPPLIER)
