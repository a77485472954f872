"""A real mosquitto broker for the lab, configured the way a device maker should.

TLS 1.2 or 1.3 only, ECDHE with AES-GCM or ChaCha20 for TLS 1.2, the lab CA
for client certificates (required), the certificate's CN as the username,
an ACL confining each device to `devices/<its id>/#`, the lab CA's CRL, no
plaintext listener and no anonymous access.
Provisions: ETSI EN 303 645 5.5-1, 5.5-4, 5.5-5; NIST IR 8259A 4;
EU CRA Annex I (2)(d), (e); OWASP ISVS 4.1.1, 4.1.2, 4.2.3.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sbd_harness.emulator import netlab
from sbd_harness.errors import SbdError
from sbd_harness.identity.pki import LabCA

BROKER_HOSTNAME = "broker.sbd.lab"
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
])
MONITOR = "sbd-monitor"
ACL = f"""# Each device (username = certificate CN) sees only its own topic tree.
pattern readwrite devices/%u/#

# The lab's monitor (the harness) reads every device and sends commands.
user {MONITOR}
topic readwrite devices/#
"""


# Deliberate misconfigurations, for trainers' labs and for showing that each
# broker check fails when the practice it checks is missing.
FLAWS = {
    "open-acl": "every identity may read and write every topic",
    "no-crl": "revoked certificates are still accepted",
    "anonymous": "clients without a certificate are let in",
    "weak-tls": "TLS 1.1 and CBC cipher suites are accepted",
}


OPENSSL_CNF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Groups = X25519:P-256:P-384
"""


class BrokerError(SbdError, RuntimeError):
    pass


def lab_address() -> str:
    """Where boards reach the host: the lab bridge, or loopback without namespaces."""
    if netlab.namespaces_available():
        netlab.ensure_bridge()
        return netlab.HOST_ADDRESS
    return "127.0.0.1"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


RUN_ROOT = Path("/run/sbd-lab/brokers")


OWNER_FILE = "owner"  # "<harness pid> <mosquitto pid>": who started the broker in this folder
ORPHAN_GRACE_S = 3600  # a folder with no owner file yet is being set up, unless it is this old


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_config(pid: int, config: Path) -> bool:
    """True if `pid` is the mosquitto reading `config` (not a process that reused its number)."""
    try:
        return str(config) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def reap_orphans(roots: tuple[Path, ...] | None = None) -> list[Path]:
    """Stops brokers whose harness process is gone (a test run killed with SIGKILL
    skips its finally blocks) and removes their folders. Returns the folders removed."""
    if roots is None:
        roots = (RUN_ROOT, Path(tempfile.gettempdir()))
    removed = []
    for root in roots:
        try:
            folders = [d for d in root.iterdir() if d.name.startswith(("broker-", "sbd-broker-")) and d.is_dir()]
        except OSError:
            continue
        for folder in folders:
            try:
                owner, broker = (int(x) for x in (folder / OWNER_FILE).read_text().split())
            except (OSError, ValueError):
                try:
                    stale = time.time() - folder.stat().st_mtime > ORPHAN_GRACE_S
                except OSError:
                    continue
                if stale:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
                continue
            if _alive(owner):
                continue
            if _alive(broker) and _runs_config(broker, folder / "mosquitto.conf"):
                try:
                    os.kill(broker, signal.SIGKILL)
                except OSError:
                    pass
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _runtime_dir() -> Path:
    """A folder the broker's own user can reach (as root, mosquitto drops privileges)."""
    import tempfile
    reap_orphans()
    if os.geteuid() == 0:
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        for p in (RUN_ROOT.parent, RUN_ROOT):
            os.chmod(p, 0o755)
        return Path(tempfile.mkdtemp(prefix="broker-", dir=RUN_ROOT))
    return Path(tempfile.mkdtemp(prefix="sbd-broker-"))


class Broker:
    def __init__(self, ca: LabCA, directory: Path | None = None, address: str | None = None,
                 port: int | None = None, flaws: tuple[str, ...] | list[str] = ()):
        unknown = sorted(set(flaws) - set(FLAWS))
        if unknown:
            raise BrokerError(f"unknown broker flaws {unknown}: choose from {sorted(FLAWS)}")
        self.flaws = tuple(flaws)
        self.ca = ca
        self.dir = Path(directory) if directory else _runtime_dir()
        self.address = address or lab_address()
        self.port = port or free_port(self.address)
        self.proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    def _copy_public(self) -> None:
        """The CA certificate and CRL, copied beside the config (they are public)."""
        self.ca.write_crl()
        shutil.copyfile(self.ca.cert_path, self.dir / "ca.crt")
        shutil.copyfile(self.ca.crl_path, self.dir / "crl.pem")

    def _hand_to_broker_user(self) -> None:
        # mosquitto started as root drops to its own user: give it this folder only.
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        for path in [self.dir, *self.dir.iterdir()]:
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        cert, key = self.ca.issue_server(BROKER_HOSTNAME, [self.address])
        (self.dir / "server.crt").write_bytes(cert)
        key_path = self.dir / "server.key"
        key_path.write_bytes(key)
        os.chmod(key_path, 0o600)
        flaws = set(self.flaws)
        (self.dir / "acl").write_text("topic readwrite #\n" if "open-acl" in flaws else ACL)
        self._copy_public()
        lines = [
            "# Generated by sbd (harness/sbd_harness/broker.py).",
            *(f"# FLAW (lab only): {FLAWS[f]}" for f in self.flaws),
            "per_listener_settings false",
            f"allow_anonymous {'true' if 'anonymous' in flaws else 'false'}",
            f"acl_file {self.dir / 'acl'}",
            # Sessions and queued QoS 1 messages survive a broker restart, so a
            # subscriber that was away misses nothing.
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 0",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            f"listener {self.port} {self.address}",
            "protocol mqtt",
            f"cafile {self.dir / 'ca.crt'}",
            f"certfile {self.dir / 'server.crt'}",
            f"keyfile {key_path}",
        ]
        if "no-crl" not in flaws:
            lines.append(f"crlfile {self.dir / 'crl.pem'}")
        if "anonymous" in flaws:
            lines += ["require_certificate false", "use_identity_as_username false"]
        else:
            lines += ["require_certificate true", "use_identity_as_username true"]
        if "weak-tls" in flaws:
            lines += ["tls_version tlsv1.1", "ciphers ALL:!aNULL:@SECLEVEL=0"]
        else:
            lines += ["tls_version tlsv1.2", f"ciphers {TLS12_CIPHERS}"]
        self.config_path.write_text("\n".join(lines) + "\n")
        # mosquitto has no option for the key-exchange groups; OpenSSL's config
        # file does. Mozilla's "intermediate": X25519, P-256, P-384.
        (self.dir / "openssl.cnf").write_text(OPENSSL_CNF)
        self.log_path.touch()
        self._hand_to_broker_user()

    def start(self, timeout: float = 10) -> "Broker":
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise BrokerError("mosquitto is not installed: `make setup` installs it (apt-get install mosquitto)")
        if not self.config_path.exists():
            self.write_config()
        env = {**os.environ, "OPENSSL_CONF": str(self.dir / "openssl.cnf")}
        self.proc = subprocess.Popen([exe, "-c", str(self.config_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True, env=env)
        (self.dir / OWNER_FILE).write_text(f"{os.getpid()} {self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited: {self._exit_reason()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            # Something listens; make sure it is our mosquitto, not another process on the port.
            time.sleep(0.2)
            if self.proc.poll() is None:
                return self
            raise BrokerError(f"mosquitto exited: {self._exit_reason()}")
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.address}:{self.port} within {timeout}s")

    def _exit_reason(self) -> str:
        err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc and self.proc.stderr else ""
        try:
            log = self.log_path.read_text(errors="replace").strip().splitlines()[-2:]
        except OSError:
            log = []
        return (err or " / ".join(log))[-500:] or "no reason given"

    def monitor(self, name: str = MONITOR, persistent: bool = False):
        """A paho-mqtt client connected over mutual TLS with a host identity.

        persistent: a fixed client ID and a kept session, so QoS 1 messages
        published while it was away (a broker restart) still reach it."""
        import paho.mqtt.client as mqtt
        cert, key = self.ca.issue_client(name)
        ident = Path(tempfile.mkdtemp(prefix="sbd-client-"))
        (ident / "c.pem").write_bytes(cert)
        (ident / "k.pem").write_bytes(key)
        client_id = f"{name}-{os.getpid()}" + ("-kept" if persistent else "")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        client.reconnect_delay_set(0.2, 1)
        client.tls_set(ca_certs=str(self.ca.cert_path), certfile=str(ident / "c.pem"), keyfile=str(ident / "k.pem"))
        client.tls_insecure_set(False)
        shutil.rmtree(ident)  # loaded into the SSL context already
        client.connect(self.address, self.port, keepalive=30)
        return client

    def reload_crl(self) -> None:
        """mosquitto rereads certificates and the CRL on SIGHUP."""
        self._copy_public()
        self._hand_to_broker_user()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)

    def stop(self, remove: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(remove=True)
