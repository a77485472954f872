"""A real mosquitto broker for the lab, configured the way a device maker should.

TLS 1.2 or 1.3 only, ECDHE with AES-GCM or ChaCha20 for TLS 1.2, the lab CA
for client certificates (required), the lab CA's CRL, no plaintext listener
and no anonymous access. Two listeners, each with its own ACL:

- the devices' port (the one devices are given): the certificate's CN is the
  username *and* the client ID (a certificate cannot take another's session),
  and an ACL confining each identity to `devices/<its CN>/#`; no identity has
  more there, whatever its name;
- the lab port, on the host's loopback, for the harness's monitor: the
  certificate's whole subject is the username, and only the monitor's subject
  (a lab identity, `OU=sbd lab identities`, which the CA never gives a device)
  reads and writes every device's topics.
Provisions: ETSI EN 303 645 5.5-1, 5.5-4, 5.5-5; NIST IR 8259A 4;
EU CRA Annex I (2)(d), (e); OWASP ISVS 1.0 4.1.1, 4.1.2, 4.2.2, 2.1.11.
"""
from __future__ import annotations

import itertools
import os
import re
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509

from sbd_harness.emulator import netlab
from sbd_harness.errors import SbdError
from sbd_harness.identity.names import BROKER_HOSTNAME, MONITOR_NAME
from sbd_harness.identity.pki import LabCA, lab_subject

TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
])
MONITOR = MONITOR_NAME
# The monitor's username on the lab port: its whole subject, as mosquitto prints it (RFC 2253).
MONITOR_USERNAME = lab_subject(MONITOR).rfc4514_string()
LAB_LISTENER_ADDRESS = "127.0.0.1"  # the lab port: the host's own loopback, out of the boards' reach
ACL = """# The devices' port. Username = client ID = the certificate's CN.
# Each identity sees only its own topic tree; no name gets more here.
pattern readwrite devices/%u/#
"""
LAB_ACL = f"""# The lab port. Username = the certificate's whole subject.
# The lab's monitor (the harness), a lab identity, reads every device and sends commands.
# A device certificate's subject is its CN alone: it matches nothing here.
user {MONITOR_USERNAME}
topic readwrite devices/#
"""


_MONITOR_SERIALS = itertools.count(1)  # the client IDs of this process's non-persistent monitors


# Deliberate misconfigurations, for trainers' labs and for showing that each
# broker check fails when the practice it checks is missing.
FLAWS = {
    "open-acl": "every identity may read and write every topic",
    "no-crl": "revoked certificates are still accepted",
    "anonymous": "clients without a certificate are let in",
    "weak-tls": "TLS 1.1 and CBC cipher suites are accepted",
    "clientid-takeover": "the client ID is not bound to the certificate: an identity can knock another off "
                         "by connecting with its client ID",
    "monitor-by-cn": f"on the devices' port, any certificate whose CN is {MONITOR} reads and writes every device",
    "long-lived-cert": "the broker's certificate is valid for a year: the devices, which cannot check its "
                       "revocation, would trust a revoked or stolen one that long",
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


def port_holder(port: int) -> str:
    """Who listens on TCP `port`, for an "Address already in use": the process (and its user), so that
    the person who hit it knows whose run it is and what to do, not just that something is there."""
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found = re.search(r'users:\(\("([^"]+)",pid=(\d+)', out)
    if not found:
        return f"port {port} is held by another process (ss shows no owner: another user's, or a socket in TIME_WAIT)"
    name, pid = found.group(1), int(found.group(2))
    try:
        user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        user = "?"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmdline = name
    return (f"port {port} is held by {name} (pid {pid}, user {user}: {cmdline[:160]}); wait for that run to end, "
            f"or give this board a port of its own (each emulated board has one: sbd board list)")


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
        self.monitor_address = LAB_LISTENER_ADDRESS
        self.monitor_port = free_port(self.monitor_address)
        while (self.monitor_address, self.monitor_port) == (self.address, self.port):
            self.monitor_port = free_port(self.monitor_address)
        self.proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    def _copy_public(self) -> None:
        """The CA certificate and a CRL written now (its window starts again; the revocation
        dates stay as recorded), copied beside the config (they are public)."""
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

    def certificate(self) -> x509.Certificate:
        """The certificate this broker presents (written at its start)."""
        return x509.load_pem_x509_certificate((self.dir / "server.crt").read_bytes())

    def _issue_certificate(self) -> None:
        """A new server certificate (it lives a day, pki.BROKER_CERT_DAYS): at every start, so a broker
        restarted days after it was set up is never refused by the devices for an expired one."""
        cert, key = self.ca.issue_server(BROKER_HOSTNAME, list(dict.fromkeys([self.address, self.monitor_address])),
                                         days=365 if "long-lived-cert" in self.flaws else None)
        (self.dir / "server.crt").write_bytes(cert)
        key_path = self.dir / "server.key"
        key_path.write_bytes(key)
        os.chmod(key_path, 0o600)

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._issue_certificate()
        flaws = set(self.flaws)
        # `pattern`, not `topic`: a topic line before any user line is for anonymous clients only
        acl = "pattern readwrite #\n" if "open-acl" in flaws else ACL
        if "monitor-by-cn" in flaws:
            acl += f"# FLAW (lab only): rights that rest on a CN alone\nuser {MONITOR}\ntopic readwrite devices/#\n"
        (self.dir / "acl").write_text(acl)
        (self.dir / "acl.lab").write_text(LAB_ACL)
        self._copy_public()
        tls = [f"cafile {self.dir / 'ca.crt'}", f"certfile {self.dir / 'server.crt'}", f"keyfile {self.dir / 'server.key'}"]
        crl = [] if "no-crl" in flaws else [f"crlfile {self.dir / 'crl.pem'}"]
        strict_tls = ["tls_version tlsv1.2", f"ciphers {TLS12_CIPHERS}"]
        if "anonymous" in flaws:
            device_identity = ["allow_anonymous true", "require_certificate false", "use_identity_as_username false"]
        else:
            device_identity = ["allow_anonymous false", "require_certificate true", "use_identity_as_username true"]
            if "clientid-takeover" not in flaws:
                # the client ID is the CN too: no certificate can take over another's session
                device_identity.append("use_username_as_clientid true")
        lines = [
            "# Generated by sbd (harness/sbd_harness/lab/broker.py).",
            *(f"# FLAW (lab only): {FLAWS[f]}" for f in self.flaws),
            # each listener has its own ACL and its own way of naming a client
            "per_listener_settings true",
            # Sessions and queued QoS 1 messages survive a broker restart, so a
            # subscriber that was away misses nothing.
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 0",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "",
            "# The devices' port: username and client ID = the certificate's CN.",
            f"listener {self.port} {self.address}",
            "protocol mqtt",
            f"acl_file {self.dir / 'acl'}",
            *device_identity, *tls, *crl,
            *(["tls_version tlsv1.1", "ciphers ALL:!aNULL:@SECLEVEL=0"] if "weak-tls" in flaws else strict_tls),
            "",
            "# The lab port, on the host's loopback: username = the certificate's whole subject.",
            f"listener {self.monitor_port} {self.monitor_address}",
            "protocol mqtt",
            f"acl_file {self.dir / 'acl.lab'}",
            "allow_anonymous false", "require_certificate true", "use_subject_as_username true",
            *tls, f"crlfile {self.dir / 'crl.pem'}", *strict_tls,
        ]
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
        else:  # a restart: a CRL copied days ago may have expired since, and would refuse everyone;
            self._copy_public()  # the server certificate of then may have, too
            self._issue_certificate()
            self._hand_to_broker_user()
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
        reason = (err or " / ".join(log))[-500:] or "no reason given"
        if "in use" in reason:
            reason += f"; {port_holder(self.port)}"
        return reason

    def monitor(self, persistent: bool = False):
        """The harness's monitor: a paho-mqtt client on the lab port with the lab identity
        `sbd-monitor` (a lab subject), which reads and writes every device's topics.

        persistent: a fixed client ID and a kept session, so QoS 1 messages
        published while it was away (a broker restart) still reach it (one such monitor
        per process). Otherwise an ID of its own: two monitors with one ID would knock each
        other off the broker, over and over, as paho reconnects each."""
        client_id = f"{MONITOR}-{os.getpid()}" + ("-kept" if persistent else f"-{next(_MONITOR_SERIALS)}")
        return self._client(MONITOR, client_id, persistent, self.monitor_address, self.monitor_port)

    def client(self, name: str, persistent: bool = False):
        """A paho-mqtt client on the devices' port with a new lab identity `name` (a probe
        for the broker checks): the broker treats it as it treats a device named `name`."""
        return self._client(name, name, persistent, self.address, self.port)

    def _client(self, name: str, client_id: str, persistent: bool, address: str, port: int):
        """Connected over mutual TLS with a certificate the lab CA issues for `name` now."""
        import paho.mqtt.client as mqtt
        cert, key = self.ca.issue_client(name)
        ident = Path(tempfile.mkdtemp(prefix="sbd-client-"))
        (ident / "c.pem").write_bytes(cert)
        (ident / "k.pem").write_bytes(key)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        client.reconnect_delay_set(0.2, 1)
        client.tls_set(ca_certs=str(self.ca.cert_path), certfile=str(ident / "c.pem"), keyfile=str(ident / "k.pem"))
        client.tls_insecure_set(False)
        shutil.rmtree(ident)  # loaded into the SSL context already
        client.connect(address, port, keepalive=30)
        return client

    def reload_crl(self) -> None:
        """A CRL written now, copied and reread: mosquitto rereads certificates and the CRL on SIGHUP.
        Call it after a revocation, and at least every CRL_DAYS on a broker that runs that long."""
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
