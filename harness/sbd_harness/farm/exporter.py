"""Emulated boards exported to a labgrid farm, beside real ones.

Each running emulated board becomes one resource group in the exporter's configuration:

- `serial`: a RawSerialPort on the board's PTY; the exporter runs ser2net on it (telnet with
  RFC 2217) while the place is acquired and publishes it as a NetworkSerialPort;
- `power`: a NetworkPowerPort with labgrid's `simplerest` backend, pointed at the power endpoint
  below (`sbd farm power`), which turns labgrid's "off" into a power cut of the board through its
  control socket. An emulated supply cannot stay off: "off" cuts the power and the board powers up
  again at once, "on" leaves the running board as it is, and the state always reads "on". A power
  cycle (labgrid-client power cycle, the harness's hard resets and power cuts) is therefore one
  power cut, as on a real switchable supply.

The endpoint listens on the exporter's machine, where the boards' control sockets are; the
client reaches it through the URL in the configuration, as it reaches a real network power switch.
"""
from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sbd_harness.errors import SbdError

GROUP_PREFIX = "sbd-"  # a board's resource group: sbd-<board name>


class ExportError(SbdError):
    """A board that cannot be exported as asked."""


def group_name(board: str) -> str:
    return GROUP_PREFIX + board


def exporter_config(boards: list[Any], power_url: str) -> dict[str, Any]:
    """The exporter's configuration (as a dict, to be written as YAML) for running emulated boards."""
    if not re.fullmatch(r"https?://[^/\s]+", power_url.rstrip("/")):
        raise ExportError(f"--power-url {power_url!r}: give the power endpoint as http://HOST:PORT")
    config: dict[str, Any] = {}
    for board in boards:
        if not board.is_running():
            raise ExportError(f"emulated board {board.name!r} is not running: sbd board start {board.name} "
                              "(the configuration names its serial port, which exists while it runs)")
        config[group_name(board.name)] = {
            "serial": {"cls": "RawSerialPort", "port": board.port, "speed": board.baudrate},
            "power": {"cls": "NetworkPowerPort", "model": "simplerest",
                      "host": f"{power_url.rstrip('/')}/power/{board.name}/{{value}}", "index": 0},
        }
    return config


def to_yaml(config: dict[str, Any]) -> str:
    """YAML a labgrid exporter reads (JSON is YAML; written so to need no YAML library here)."""
    # The exporter reads its file as a Jinja template, where "#" starts a statement: comments take "##".
    lines = ["## labgrid exporter configuration for emulated boards, written by sbd farm exporter-config.",
             "## Start: labgrid-exporter --coordinator HOST:PORT --name NAME --hostname HOST THIS_FILE"]
    for group, resources in config.items():
        lines.append(f"{json.dumps(group)}:")
        for name, params in resources.items():
            lines.append(f"  {json.dumps(name)}:")
            lines += [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def place_commands(boards: list[Any], exporter_name: str) -> list[list[str]]:
    """labgrid-client commands that make one place per exported board (its name), matching its group."""
    cmds = []
    for board in boards:
        cmds.append(["labgrid-client", "-p", board.name, "create"])
        cmds.append(["labgrid-client", "-p", board.name, "add-match", f"{exporter_name}/{group_name(board.name)}/*"])
    return cmds


EXPORTED_MARK = "exported"  # in a board's state folder: written by exporter-config, the power switch's list


def mark_exported(board: Any) -> None:
    """The power switch serves only boards a configuration exported, not every board of the user."""
    (board.state.dir / EXPORTED_MARK).write_text("exported to a labgrid farm by sbd farm exporter-config\n")


class PowerHandler(BaseHTTPRequestHandler):
    """GET /power/NAME/0: a power cut; /power/NAME/1: on (it is); /power/NAME: "1" (on). Only for
    boards exported (mark_exported); anything else is not found."""

    server_version = "sbd-farm-power"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        from sbd_harness.boards.emulated import EmulatedBoard
        from sbd_harness.boards.base import BoardError
        m = re.fullmatch(r"/power/([A-Za-z0-9_.-]+)(?:/([01]))?", self.path)
        if not m:
            return self._reply(404, "use /power/NAME/0, /power/NAME/1 or /power/NAME\n")
        board = EmulatedBoard(m.group(1))
        if not (board.state.dir / EXPORTED_MARK).is_file():
            return self._reply(404, f"emulated board {m.group(1)!r} is not exported (sbd farm exporter-config)\n")
        if not board.is_running():
            return self._reply(404, f"emulated board {m.group(1)!r} is not running\n")
        if m.group(2) == "0":
            try:
                board.control({"cmd": "reset", "kind": "power-cut"})
            except (BoardError, OSError) as exc:
                return self._reply(503, f"{exc}\n")
        self._reply(200, "1")

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def power_server(host: str, port: int) -> ThreadingHTTPServer:
    try:
        return ThreadingHTTPServer((host, port), PowerHandler)
    except OSError as exc:
        raise ExportError(f"cannot listen on {host}:{port}: {exc}") from exc
