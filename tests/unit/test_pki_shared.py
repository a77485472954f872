"""One lab CA used by several runs at once (two `sbd verify`, a provisioning beside
them, as `make demo` does): every write to its index and CRL survives, and no
reader meets a half-written file."""
from __future__ import annotations

import base64
import json
import multiprocessing
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sbd_harness.identity.pki import LabCA

COMMANDS = 40
DEVICE = "a0b1c2d3e4f5"  # the firmware's form: the CA certifies no other


def _csr(device_id: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])).sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def _sign_many(pki: str, device_id: str) -> list[int]:
    ca = LabCA(Path(pki))
    seqs = []
    for _ in range(COMMANDS):
        line = ca.sign_command(device_id, "status")
        seqs.append(json.loads(base64.b64decode(line.split()[1]))["seq"])
    return seqs


def _issue_and_revoke(pki: str, n: int) -> None:
    ca = LabCA(Path(pki))
    for i in range(n):
        ca.issue(_csr(f"0000000000{i:02x}"), f"0000000000{i:02x}")
        cert, _ = ca.issue_client(f"client{i}")
        ca.revoke_serial(x509.load_pem_x509_certificate(cert).serial_number)


def test_commands_signed_by_runs_at_once_each_get_their_own_sequence_number(tmp_path):
    ca = LabCA(tmp_path / "pki")
    ca.init()
    ca.issue(_csr(DEVICE), DEVICE)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        signers = [pool.apply_async(_sign_many, (str(ca.dir), DEVICE)) for _ in range(2)]
        issuer = pool.apply_async(_issue_and_revoke, (str(ca.dir), 10))
        seqs = [s for r in signers for s in r.get(300)]
        issuer.get(300)
    assert sorted(seqs) == list(range(1, 2 * COMMANDS + 1)), "two runs signed a command with the same number"
    index = ca.index()
    assert index["devices"][DEVICE]["cmd_seq"] == 2 * COMMANDS
    assert {f"0000000000{i:02x}" for i in range(10)} <= set(index["devices"])
    assert len(index["revoked"]) == 10
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert {r.serial_number for r in crl} == set(index["revoked"])
    assert not [p.name for p in ca.dir.iterdir() if p.name.startswith(".index") or p.name.startswith(".crl")]
