# INSECURE TRAINING BUILD ONLY (`sbd flash --profile insecure`): the reference
# firmware has no such module and listens on no port.
#
# A "debug shell" of the kind left in shipped products: plain TCP on a fixed
# port (mistake open-port), one password for the whole product line (mistake
# default-password makes it "admin"), and after it, Python on the device:
# one line reads the private key from NVS. Labs: docs/labs/open-port.md and
# docs/labs/default-password.md.
# Breaks: ETSI EN 303 645 5.6-1, 5.6-5, 5.5-4 (open-port); 5.1-1, 5.4-3
# (default-password); NIST IR 8259A 4; EU CRA Annex I (2)(j), (2)(b).
import errno
import json
import select
import socket

PORT = 2323
PASSWORD = None  # no password set: every login is refused
MAX_LINE = 256
BANNER = b"sbd debug shell - INSECURE TRAINING BUILD - do not deploy\r\npassword: "


def _ready(poller):
    # ipoll allocates nothing (extmod/modselect.c, as the ESP32 port builds it): an accept() or
    # recv() that raises EAGAIN ten times a second would leave an exception on the heap at every
    # tick, and a device with little heap would no longer find the blocks a signed attest needs.
    for _ in poller.ipoll(0):
        return True
    return False


class Shell:
    def __init__(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo("0.0.0.0", PORT)[0][-1])
        s.listen(1)
        s.setblocking(False)
        self.server = s
        self.knock = select.poll()
        self.knock.register(s, select.POLLIN)
        self.talk = select.poll()
        self.client = None
        self.buf = b""
        self.authed = False
        self.env = {}

    def tick(self):
        if self.client is None:
            if not _ready(self.knock):
                return  # nobody knocking
            try:
                self.client = self.server.accept()[0]
            except OSError:
                return
            self.client.setblocking(False)
            self.talk.register(self.client, select.POLLIN)
            self.buf, self.authed, self.env = b"", False, {}
            self._send(BANNER)
            return
        if not _ready(self.talk):
            return
        try:
            data = self.client.recv(MAX_LINE)
        except OSError as e:
            if e.args and e.args[0] == errno.EAGAIN:
                return
            data = b""
        if not data:
            self._close()
            return
        self.buf += data
        while self.client is not None and b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self._line(line.strip().decode())
        if self.client is not None and len(self.buf) > MAX_LINE:
            self._close()

    def _line(self, line):
        if not self.authed:
            if PASSWORD is not None and line == PASSWORD:
                self.authed = True
                self._send(b"logged in\r\n>>> ")
            else:
                self._send(b"wrong password\r\n")
                self._close()
            return
        try:
            try:
                out = repr(eval(line, self.env))
            except SyntaxError:
                exec(line, self.env)
                out = ""
        except Exception as e:  # noqa: shown to the user, as a REPL would
            out = "%s: %s" % (type(e).__name__, e)
        self._send(out.encode() + (b"\r\n>>> " if out else b">>> "))

    def _send(self, data):
        try:
            self.client.send(data)
        except OSError:
            self._close()

    def _close(self):
        if self.client is not None:
            self.talk.unregister(self.client)
            self.client.close()
        self.client = None


def start(tick=None):
    """A tick function that serves the shell, then runs `tick` (the MQTT link's)."""
    try:
        shell = Shell()
    except OSError as e:
        print(json.dumps({"sbd": "debug_shell", "error": str(e)}))
        return tick
    print(json.dumps({"sbd": "debug_shell", "port": PORT}))

    def both():
        shell.tick()
        # the link's answer (more network work waiting) goes on to the console loop: the shell must
        # not slow the device's MQTT link down, only open a port
        return tick() if tick is not None else False
    return both
