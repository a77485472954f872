"""A labgrid place as the board under test: acquired through the coordinator, its serial port
reached over RFC 2217 (the exporter's ser2net), its power switch (where it has one) driving hard
resets and power cuts, released at the end.

Everything here goes through labgrid's own client (`labgrid.remote.client`): the session, the
place's lock and its resources are labgrid's; the harness adds only the wait for a busy place and
the board on top. The coordinator is `LG_COORDINATOR` (HOST[:PORT], default 127.0.0.1:20408), as
for labgrid-client.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Iterator

import serial

from sbd_harness.boards.base import PowerControl
from sbd_harness.boards.serial_board import SerialBoard
from sbd_harness.errors import SbdError

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's own default
DEFAULT_WAIT_S = 1800.0  # how long `--place` waits for a place another client holds
POLL_S = 0.5             # how often a waiting client looks at the place again
RESOURCE_WAIT_S = 15.0   # how long an acquired place's serial port may take to appear (ser2net starting)
POWER_OFF_S = 1.0        # how long a power cycle keeps the supply off


class FarmError(SbdError):
    """A place that cannot be used: no coordinator, no such place, busy too long, no serial port."""


def coordinator_address() -> str:
    return os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def _client():
    try:
        from labgrid.remote import client
    except ImportError as exc:
        raise FarmError("labgrid is not installed: pip install 'sbd-harness[farm]' (make setup does)") from exc
    return client


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """labgrid's client logs a refused connection on the root logger before raising; the harness
    says it once, in its own words."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


class Place:
    """One labgrid place, held by this process between `acquire()` and `release()`."""

    def __init__(self, name: str, address: str | None = None):
        self.name = name
        self.address = address or coordinator_address()
        client = _client()
        self._errors = (client.Error,)
        args = argparse.Namespace(place=name, allow_unmatched=False, kick=False)
        try:
            with _quiet_root_logger():
                self.session = client.start_session(self.address, extra={"args": args})
        except client.Error as exc:
            raise FarmError(f"no labgrid coordinator at {self.address} (LG_COORDINATOR): {exc}; start one with "
                            "labgrid-coordinator --listen HOST:PORT, or set LG_COORDINATOR") from exc
        self.loop = self.session.loop
        self.held = False
        if name not in self.session.places:
            known = ", ".join(sorted(self.session.places)) or "none"
            self.close()
            raise FarmError(f"no place {name!r} at the coordinator {self.address}; its places: {known}")

    @property
    def me(self) -> str:
        return f"{self.session.gethostname()}/{self.session.getuser()}"

    def holder(self) -> str | None:
        """Who holds the place now ("host/user"), or None."""
        return self.session.places[self.name].acquired

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def acquire(self, wait: float = DEFAULT_WAIT_S) -> None:
        """Takes the place's lock at the coordinator; while another client holds it, waits (at most
        `wait` seconds) and tries again once it is free. Several clients waiting are not queued:
        whoever asks first after a release gets it."""
        deadline = time.monotonic() + wait
        said = False
        while True:
            holder = self.holder()
            if holder is None:
                try:
                    with contextlib.redirect_stdout(sys.stderr):  # labgrid says "acquired place X"
                        self._run(self.session.acquire())
                    self.held = True
                    return
                except self._errors as exc:
                    self._run(self.session.sync_with_coordinator())
                    holder = self.holder()
                    if holder is None:  # not a client that was quicker: the place cannot be had as it is
                        raise FarmError(f"cannot acquire place {self.name}: {exc} "
                                        f"(labgrid-client -p {self.name} show)") from exc
            if time.monotonic() >= deadline:
                mine = " (your own user on this host: an earlier run that did not release it? " \
                       f"labgrid-client -p {self.name} release)" if holder == self.me else ""
                raise FarmError(f"place {self.name} is acquired by {holder}{mine}; waited {wait:.0f} s "
                                "(--place-wait)")
            if not said:
                print(f"sbd: place {self.name} is acquired by {holder}; waiting for it (at most {wait:.0f} s)",
                      file=sys.stderr, flush=True)
                said = True
            self._run(asyncio.sleep(POLL_S))  # the session takes in the coordinator's updates meanwhile

    def release(self) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(*self._errors), contextlib.redirect_stdout(sys.stderr):
                self._run(self.session.release())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.session.stop())
            self._run(self.session.close())

    def resources(self) -> dict[str, Any]:
        """The acquired place's resources by class name (the first of each class), waiting until the
        serial port is published (the exporter starts ser2net when the place is acquired)."""
        deadline = time.monotonic() + RESOURCE_WAIT_S
        while True:
            self._run(self.session.sync_with_coordinator())
            place = self.session.places[self.name]
            try:
                found = self.session.get_target_resources(place)
            except self._errors as exc:
                raise FarmError(f"place {self.name}: {exc}") from exc
            by_cls: dict[str, Any] = {}
            for (_, cls), entry in sorted(found.items()):
                by_cls.setdefault(cls, entry)
            port = by_cls.get("NetworkSerialPort")
            if port is not None and port.avail and port.args.get("port"):
                return by_cls
            if time.monotonic() >= deadline:
                what = "is not available at its exporter" if port is not None else "has none"
                raise FarmError(f"place {self.name} has no serial port to use: its NetworkSerialPort {what} "
                                f"(resources: {', '.join(sorted(by_cls)) or 'none'}; labgrid-client -p {self.name} show)")
            self._run(asyncio.sleep(POLL_S))

    def power_driver(self) -> Any | None:
        """labgrid's power driver for the place's NetworkPowerPort, or None without one."""
        from labgrid import Target
        from labgrid.driver import NetworkPowerDriver
        from labgrid.resource import RemotePlace
        from labgrid.resource.remote import RemotePlaceManager
        manager = RemotePlaceManager.get()  # as labgrid-client does: the manager uses this session
        manager.session = self.session
        manager.loop = self.loop
        target = Target(self.name, env=None)
        RemotePlace(target, name=self.name)
        if not any(type(r).__name__ == "NetworkPowerPort" for r in target.resources):
            return None
        driver = NetworkPowerDriver(target, name=None, delay=POWER_OFF_S)
        target.activate(driver)
        return driver


class PlaceBoard(SerialBoard):
    """The board at a place: a serial board on the exporter's RFC 2217 port. Without a power switch
    a hard reset is the serial board's own (RTS through ser2net, on a real board's auto-reset
    circuit), and the board cannot be power-cut."""

    kind = "serial"

    def __init__(self, place: Place, url: str, **kw: Any):
        super().__init__(url, name=place.name, **kw)
        self.place = place

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "place": self.place.name, "coordinator": self.place.address}


class PoweredPlaceBoard(PlaceBoard, PowerControl):
    """The board at a place with a power switch (labgrid's power driver): hard resets and power cuts
    are a power cycle, so the checks' power-cut phases run on it."""

    def __init__(self, place: Place, power: Any, url: str, **kw: Any):
        super().__init__(place, url, **kw)
        self.power = power

    def trigger_reset(self, port: serial.Serial, kind: str) -> None:
        if kind in ("hard", "power-cut"):
            self.power.cycle()
            return
        super().trigger_reset(port, kind)

    def power_cut(self, timeout: float = 15) -> None:
        self.reset("power-cut", timeout)


def _board(place: Place, chip: str, baudrate: int | None) -> PlaceBoard:
    res = place.resources()
    serial_port = res["NetworkSerialPort"]
    # As labgrid's own SerialDriver: ser2net on a port without modem lines (a PTY) leaves RFC 2217's
    # SET_CONTROL unanswered; the requests still go out (RTS resets a real board through it).
    url = f"rfc2217://{serial_port.args['host']}:{serial_port.args['port']}?ign_set_control"
    if serial_port.args.get("protocol", "rfc2217") != "rfc2217":
        url = f"socket://{serial_port.args['host']}:{serial_port.args['port']}"
    spec = SerialBoard.from_description(url, chip, baudrate=baudrate)
    kw = {"baudrate": spec.baudrate, "chip": spec.chip, "console": spec.console, "esptool_reset": spec.esptool_reset}
    power = place.power_driver()
    if power is None:
        return PlaceBoard(place, url, **kw)
    return PoweredPlaceBoard(place, power, url, **kw)


# The places this process holds, by name: `sbd verify --place` acquires its place, and the pytest
# plugin, running in the same process, finds it here instead of acquiring it a second time.
_HELD: dict[str, PlaceBoard] = {}


@contextlib.contextmanager
def hold(name: str, chip: str = "esp32", baudrate: int | None = None,
         wait: float = DEFAULT_WAIT_S) -> Iterator[PlaceBoard]:
    """The board at place `name`, acquired for the block and released after it, also on an error,
    Ctrl-C or SIGTERM (a CI job cancelled)."""
    if name in _HELD:
        yield _HELD[name]
        return
    place = Place(name)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _terminate(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        place.acquire(wait)
        board = _board(place, chip, baudrate)
        _HELD[name] = board
        yield board
    finally:
        _HELD.pop(name, None)
        place.release()
        place.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
