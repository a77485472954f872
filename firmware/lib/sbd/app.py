# The application. An unprovisioned (or unlocked) device returns to the REPL
# so it can be provisioned; a locked one runs here for good and never hands
# the console back. Later practices (MQTT, OTA) hook into run_locked().
import json
import machine
from sbd import commands, console, device, identity, state, store


def main():
    if not state.locked():
        console.open()
        return
    try:
        run_locked()
    except BaseException as e:
        # Never fall through to the REPL on a locked device. Say what kind of
        # failure it was, and nothing more.
        print(json.dumps({"sbd": "app_error", "error": type(e).__name__}))
        machine.reset()


def run_locked():
    console.close()
    from sbd import der
    ca_key = der.cert_public_key(identity.ca_certificate())
    device_id = device.device_id()
    cert_sha256 = identity.fingerprint()

    def on_line(line):
        if not line.startswith(commands.PREFIX):
            return  # noise on the UART: ignored, and nothing disclosed
        try:
            name, args, seq = commands.parse(line, ca_key, device_id, store.get_int("cmd_seq", 0), cert_sha256)
        except commands.CommandError as e:
            print(json.dumps({"sbd": "cmd", "ok": False, "error": str(e)}))
            return
        store.put_int("cmd_seq", seq)
        print(json.dumps({"sbd": "cmd", "ok": True, "cmd": name, "seq": seq}))
        if name == "factory_reset":
            from sbd import factory_reset
            factory_reset.erase_and_reset()
        elif name == "unlock_console":
            store.put_int(state.LOCKED, 0)
            machine.reset()
        elif name == "status":
            print(json.dumps({"sbd": "status", "security": state.summary()}))

    console.serve(on_line, commands.MAX_LINE + 1)
