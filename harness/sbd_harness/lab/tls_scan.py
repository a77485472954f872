"""The broker's TLS configuration checked by a real scanner: sslyze against
Mozilla's "intermediate" profile (or a stricter one).

A check written in the harness could only find what its author thought of;
sslyze probes every protocol version and cipher suite, the key-exchange
groups, the certificate and the classic TLS vulnerabilities, and judges the
result against Mozilla's published configuration.

sslyze runs as its own program (`.venv/tools/sslyze`, made by `make setup`)
because it pins a `cryptography` older than the harness's. Its command line
does not put the compliance verdict in its JSON: it prints a "COMPLIANCE
AGAINST TLS CONFIGURATION" section (also with --quiet) and exits 1 when a
server is not compliant *or* the scan was incomplete, 0 otherwise -- also 0
when it could not connect at all. So the verdict here needs both: the JSON
shows the scan ran (else TLSScanError), the exit code and the printed
section give compliance and its reasons.

Provisions: ETSI EN 303 645 5.5-1; OWASP ISVS 1.0 4.1.1, 4.1.2.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbd_harness.errors import SbdError
from sbd_harness.paths import REPO_ROOT

MOZILLA_CONFIGS = ("modern", "intermediate", "old")
TOOL_SSLYZE = REPO_ROOT / ".venv" / "tools" / "sslyze" / "bin" / "sslyze"

# sslyze's JSON field -> the protocol name reported here ("TLSv1.0", not
# Mozilla's "TLSv1", so that no name is a prefix of another).
_VERSION_FIELDS = {
    "ssl_2_0_cipher_suites": "SSLv2",
    "ssl_3_0_cipher_suites": "SSLv3",
    "tls_1_0_cipher_suites": "TLSv1.0",
    "tls_1_1_cipher_suites": "TLSv1.1",
    "tls_1_2_cipher_suites": "TLSv1.2",
    "tls_1_3_cipher_suites": "TLSv1.3",
}
_TITLE = "COMPLIANCE AGAINST TLS CONFIGURATION"
_PROBLEM = re.compile(r"^\s+\* (?P<criterion>[\w-]+): (?P<text>.*)$")


class TLSScanError(SbdError, RuntimeError):
    """The scan gave no verdict (sslyze missing, no connection, unreadable
    output): never to be read as a pass."""


@dataclass
class ScanResult:
    """What sslyze found, and whether it meets the Mozilla profile."""
    target: str
    profile: str
    compliant: bool
    problems: list[str]                  # "criterion: reason", as sslyze reports them
    tls_versions: list[str]              # accepted, oldest first
    cipher_suites: list[str]             # accepted (IANA names), all versions
    accepted: dict[str, list[str]]       # protocol version -> accepted suites
    tls_curves: list[str]                # key-exchange groups the server accepts
    incomplete: list[str] = field(default_factory=list)  # scan commands that failed
    sslyze_version: str = ""
    seconds: float = 0.0


def find_sslyze() -> str | None:
    """The sslyze program: $SBD_SSLYZE, the project's tool virtualenv, then PATH."""
    env = os.environ.get("SBD_SSLYZE")
    if env:
        return env
    if TOOL_SSLYZE.is_file() and os.access(TOOL_SSLYZE, os.X_OK):
        return str(TOOL_SSLYZE)
    return shutil.which("sslyze")


def _target(address: str, port: int, server_name: str) -> str:
    """sslyze's `host:port{ip}`: the name for SNI and certificate checks, the address to connect to."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    addr = f"[{address}]" if ip is not None and ip.version == 6 else address
    host = f"[{server_name}]" if ":" in server_name else server_name
    return f"{host}:{port}{{{addr}}}"


def _error_summary(trace: Any) -> str:
    """The last line of one of sslyze's error traces (the exception itself)."""
    if not trace:
        return ""
    text = trace if isinstance(trace, str) else json.dumps(trace)
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _parse_verdict(stdout: str) -> tuple[str, list[str]]:
    """("ok" | "failed" | "error" | "", the "criterion: reason" lines) from sslyze's printed section."""
    if _TITLE not in stdout:
        return "", []
    section = stdout.split(_TITLE, 1)[1]
    verdict, problems = "", []
    for line in section.splitlines():
        if ": OK - Compliant." in line:
            verdict = "ok"
        elif ": FAILED - Not compliant." in line:
            verdict = "failed"
        elif ": ERROR - Scan did not run successfully" in line:
            verdict = "error"
        else:
            m = _PROBLEM.match(line)
            if m:
                problems.append(f"{m['criterion']}: {m['text']}")
    return verdict, problems


def scan(address: str, port: int, client_cert_pem: bytes, client_key_pem: bytes, server_name: str,
         ca_cert_pem: bytes | None = None, profile: str = "intermediate", timeout: float = 180,
         sslyze: str | None = None) -> ScanResult:
    """Scans the TLS server at address:port as `server_name` with a client identity
    (the broker requires mutual TLS) and judges it against Mozilla's `profile`.

    ca_cert_pem: the CA that signed the server's certificate. Mozilla's profile
    requires a certificate that validates; a lab CA is in no public trust store,
    so without it the certificate check always fails.
    Raises TLSScanError when there is no verdict to give."""
    if profile not in MOZILLA_CONFIGS:
        raise ValueError(f"unknown Mozilla profile {profile!r}: choose from {MOZILLA_CONFIGS}")
    exe = sslyze or find_sslyze()
    if exe is None:
        raise TLSScanError("sslyze is not installed: `make setup` installs it in .venv/tools/sslyze "
                           "(or set SBD_SSLYZE to an sslyze program)")
    target = _target(address, port, server_name)
    with tempfile.TemporaryDirectory(prefix="sbd-sslyze-") as tmp:  # 0700: it holds a private key
        d = Path(tmp)
        (d / "client.crt").write_bytes(client_cert_pem)
        key_path = d / "client.key"
        key_path.touch(0o600)
        key_path.write_bytes(client_key_pem)
        out = d / "scan.json"
        cmd = [exe, "--quiet", "--json_out", str(out), f"--mozilla_config={profile}",
               "--cert", str(d / "client.crt"), "--key", str(key_path), "--sni", server_name]
        if ca_cert_pem is not None:
            (d / "ca.crt").write_bytes(ca_cert_pem)
            cmd += ["--certinfo_ca_file", str(d / "ca.crt")]
        cmd.append(target)
        # The scanner's own OpenSSL must not pick up a configuration meant for
        # something else (a broker's OPENSSL_CONF), and its warnings are noise.
        env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
        env["PYTHONWARNINGS"] = "ignore"
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except FileNotFoundError as exc:
            raise TLSScanError(f"sslyze not found at {exe}: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise TLSScanError(f"sslyze did not finish scanning {target} within {timeout:.0f}s") from exc
        seconds = time.monotonic() - started
        try:
            report = json.loads(out.read_text())
        except (OSError, ValueError) as exc:
            raise TLSScanError(f"sslyze wrote no readable JSON for {target} (exit {proc.returncode}): "
                               f"{(proc.stdout + proc.stderr).strip()[-800:]}") from exc
    return _result(report, proc, target, profile, seconds)


def _result(report: dict[str, Any], proc: subprocess.CompletedProcess[str], target: str, profile: str,
            seconds: float) -> ScanResult:
    """The ScanResult from sslyze's JSON, exit code and printed verdict; TLSScanError when they disagree."""
    if report.get("invalid_server_strings"):
        bad = report["invalid_server_strings"][0]
        raise TLSScanError(f"sslyze refused the target {target}: {bad.get('error_message', bad)}")
    results = report.get("server_scan_results") or []
    if len(results) != 1:
        raise TLSScanError(f"sslyze returned {len(results)} results for {target}")
    server = results[0]
    if server.get("connectivity_status") != "COMPLETED":
        raise TLSScanError(f"sslyze could not connect to {target}: "
                           f"{_error_summary(server.get('connectivity_error_trace')) or server.get('connectivity_status')}")
    if server.get("scan_status") != "COMPLETED" or not server.get("scan_result"):
        raise TLSScanError(f"sslyze's scan of {target} did not complete: {server.get('scan_status')}")
    commands: dict[str, Any] = server["scan_result"]

    incomplete = []
    for name, attempt in commands.items():
        if attempt.get("status") == "ERROR":
            reason = _error_summary(attempt.get("error_trace")) or attempt.get("error_reason") or "error"
            incomplete.append(f"{name}: {reason}")

    accepted: dict[str, list[str]] = {}
    for name, version in _VERSION_FIELDS.items():
        res = (commands.get(name) or {}).get("result")
        if res and res.get("is_tls_version_supported"):
            accepted[version] = sorted(c["cipher_suite"]["name"] for c in res.get("accepted_cipher_suites", []))
    curves_res = (commands.get("elliptic_curves") or {}).get("result") or {}
    curves = sorted(c["name"] for c in curves_res.get("supported_curves") or [])

    verdict, problems = _parse_verdict(proc.stdout)
    if proc.returncode == 0 and verdict == "ok":
        compliant = True
    elif proc.returncode == 1 and verdict == "failed" and problems:
        compliant = False
    elif proc.returncode == 1 and verdict == "error":
        # Connected, but some probe failed: the profile could not be checked.
        compliant = False
        problems = [f"scan incomplete: {x}" for x in incomplete] or ["scan incomplete (see sslyze's output)"]
    else:
        raise TLSScanError(f"sslyze gave no compliance verdict for {target} (exit {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr).strip()[-800:]}")
    return ScanResult(
        target=target, profile=profile, compliant=compliant, problems=problems,
        tls_versions=list(accepted), cipher_suites=sorted({s for v in accepted.values() for s in v}),
        accepted=accepted, tls_curves=curves, incomplete=incomplete,
        sslyze_version=str(report.get("sslyze_version", "")), seconds=seconds)
