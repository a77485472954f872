# The application. An unprovisioned (or unlocked) device returns to the REPL
# so it can be provisioned; a locked one runs here for good and never hands
# the console back. Later practices (MQTT, OTA) hook into run_locked().
# A locked device arms the task watchdog and feeds it from its main loop, so
# a loop that stops going round resets the device instead of leaving it dead.
# Provisions: ETSI EN 303 645 5.9-2 (recovers cleanly).
import binascii
import json
import machine
import time
from sbd import commands, console, device, identity, state, store

# The watchdog's timeout: longer than the longest pass of the main loop. That
# is a (re)connection, every step bounded: TCP connect and TLS handshake at
# most 10 s each (sbd.tls, the socket's timeout), CONNACK and the rest of a
# packet 5 s (sbd.mqtt), the P-256 work of a signed command or an update's
# commit a few seconds at the chip's speed; with room to spare.
WDT_MS = 60000


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
        try:
            from sbd import slots
            slots.note_exit(type(e).__name__)  # a trial that ends this way says so when reverted
        except Exception:  # noqa: the reset goes ahead regardless
            pass
        machine.reset()


def _forget(*names):
    # Modules only the boot needed: their code is freed once nothing holds it.
    import sys
    for name in names:
        sys.modules.pop(name, None)
    import gc
    gc.collect()


def run_locked():
    console.close()
    # Once armed it cannot be stopped (ports/esp32/machine_wdt.c); it keeps
    # counting across a soft reset, and a hard reset stops it.
    wdt = machine.WDT(timeout=WDT_MS)
    _forget("sbd.boot", "sbd.boot_report", "sbd.factory_reset", "sbd.provisioning", "sbd.csr")
    from sbd import config, der
    ca_key = der.cert_public_key(identity.ca_certificate())
    device_id = device.device_id()
    cert_sha256 = identity.fingerprint()

    import gc
    links = []  # the network link, once there is one
    fresh = commands.Challenge()  # one for the console and MQTT; a reset forgets it

    def handle(line, from_console=True):
        """One signed command line, from the console or from MQTT: its reply."""
        if line.strip() == commands.CHALLENGE:  # unsigned: it only hands out a nonce
            nonce = fresh.issue(time.ticks_ms())
            return {"sbd": "cmd", "ok": True, "cmd": "challenge", "device": device_id,
                    "cert": cert_sha256, "nonce": nonce}
        if not line.startswith(commands.PREFIX):
            return None  # noise: ignored, and nothing disclosed
        gc.collect()
        try:
            name, args, seq = commands.parse(line, ca_key, device_id, store.get_int("cmd_seq", 0), cert_sha256,
                                             fresh.current(time.ticks_ms()))
        except commands.CommandError as e:
            return {"sbd": "cmd", "ok": False, "error": str(e)}
        if name in commands.CONSOLE_ONLY and not from_console:
            return {"sbd": "cmd", "ok": False, "error": "serial console only"}
        if name in commands.FRESH:
            fresh.spend()  # accepted once
        store.put_int("cmd_seq", seq)
        reply = {"sbd": "cmd", "ok": True, "cmd": name, "seq": seq}
        if name == "status":
            reply["status"] = state.summary()
        elif name == "set_interval":
            settings = config.load()
            if settings is None:
                return {"sbd": "cmd", "ok": False, "error": "not configured"}
            reply["previous_s"] = settings["telemetry_s"]
            settings["telemetry_s"] = args["seconds"]
            config.save(settings)
            if links:
                links[0].set_interval(args["seconds"])
            reply["telemetry_s"] = args["seconds"]
        elif name == "attest":
            return attest(reply, args["nonce"])
        return reply

    def attest(reply, nonce):
        # The statement is hashed here and made again as on_line writes it out,
        # as base64 piece by piece (sbd.attest.Statement).
        try:
            from sbd import attest as attestation
            body, signature = attestation.answer(nonce)
        except MemoryError:
            gc.collect()
            return {"sbd": "cmd", "ok": False, "error": "out of memory"}
        except OSError:
            return {"sbd": "cmd", "ok": False, "error": "file unreadable"}
        reply["signature"] = binascii.b2a_base64(signature, newline=False).decode()
        reply["statement"] = body
        return reply

    def act(reply):
        # Side effects after the reply went out.
        if reply and reply.get("ok") and reply["cmd"] == "factory_reset":
            from sbd import factory_reset
            factory_reset.erase_and_reset()
        elif reply and reply.get("ok") and reply["cmd"] == "unlock_console":
            store.put_int(state.LOCKED, 0)
            machine.reset()
        elif reply and reply.get("cmd") == "attest":
            _forget("sbd.attest")  # its code held no longer: the next attest finds the blocks it needs

    def on_line(line):
        reply = handle(line)
        if reply is not None:
            if "statement" in reply:
                from sbd import attest as attestation
                try:
                    attestation.write_reply(reply)
                except (MemoryError, OSError) as e:
                    # The line so far is cut short (its JSON invalid); the answer is the next one.
                    gc.collect()
                    print()
                    print(json.dumps({"sbd": "cmd", "ok": False,
                                      "error": "out of memory" if isinstance(e, MemoryError) else "file unreadable"}))
                    return
            else:
                print(json.dumps(reply))
            if reply.get("status") is not None:
                print(json.dumps({"sbd": "status", "security": reply["status"]}))
            act(reply)

    settings = config.load()
    if settings is not None:
        from sbd.link import Link

        def on_command(line):
            return handle(line, from_console=False) or {"sbd": "cmd", "ok": False, "error": "not a command"}

        link = Link(settings, on_command, after_reply=act)
        links.append(link)

    def tick():
        wdt.feed()  # one pass of the main loop: the console's read, then the link's work
        return links[0].tick() if links else False

    console.serve(on_line, commands.MAX_LINE + 1, tick=tick, period_ms=100)
