"""The lab's stand-in brokers share one shape: a TCP server on a thread of
its own that hands each connection to the subclass, and only those from the
device under test when other boards share the lab network."""
from __future__ import annotations

import socket
import threading


def peer_address(conn: socket.socket) -> str | None:
    try:
        return conn.getpeername()[0]
    except OSError:
        return None


class Listener:
    """Accepts connections until stopped (or `finished()`), each handled by
    `handle(conn)` on the listener's thread. A context manager."""

    accept_poll_s = 0.2  # how often the accept loop looks at its stop flag
    join_s = 2.0         # how long leaving waits for a connection being handled

    def __init__(self, address: str, port: int = 0, only_from: str | None = None):
        self.only_from = only_from  # the device under test; other boards of a class may share the lab
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(self.accept_poll_s)
        self.address, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def finished(self) -> bool:
        return False

    def cleanup(self) -> None:
        """What the subclass holds beyond the socket (certificate files...)."""

    def _serve(self) -> None:
        while not self._stop.is_set() and not self.finished():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            if self.only_from and peer_address(conn) != self.only_from:
                conn.close()
                continue
            self.handle(conn)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.join_s)
        self.sock.close()
        self.cleanup()
