# Connected operation: Wi-Fi, trusted time, mutual TLS to the broker, MQTT
# with a birth message and a last will, telemetry through the flash-backed
# outbox (one QoS 1 message in flight; acknowledged messages leave the
# outbox, nothing is lost to an outage, a reboot or a power cut), and
# reconnection with capped exponential backoff and jitter. Signed commands
# arrive on devices/<id>/cmd; their results go to devices/<id>/result.
# Signed updates arrive on devices/<id>/ota/ctl and /ota/data (sbd.ota).
# Provisions: ETSI EN 303 645 5.5-1, 5.9-1, 5.9-2, 5.9-3, 5.13-1B;
# NIST IR 8259A 4; EU CRA Annex I (2)(h).
import gc
import json
import os
import time
import network
from sbd import clock, device, network_policy, state, tls, version
from sbd.mqtt import MQTTClient, MQTTProtocolError
from sbd.outbox import Outbox

BACKOFF_MIN_MS = 1000
BACKOFF_MAX_MS = 60000
KEEPALIVE_S = 30
COMMIT_RETRY_MS = 1000
# Association (WPA2 and DHCP) takes seconds on the chip, and the port keeps
# reassociating on its own after a loss: the link waits for it, this long at
# most, without blocking the loop and without counting it as a failure.
ASSOC_WAIT_MS = 15000
ASSOC_POLL_MS = 100
MAX_PACKET = 1536  # a signed command (at most 1024 bytes) and its topic fit


def log(event, **fields):
    fields["sbd"] = "net"
    fields["event"] = event
    print(json.dumps(fields))


def backoff_ms(failures):
    """Exponential from 1 s, capped at 60 s, with jitter in its upper half."""
    ceiling = min(BACKOFF_MAX_MS, BACKOFF_MIN_MS << min(failures - 1, 16))
    r = os.urandom(2)
    return ceiling // 2 + (r[0] << 8 | r[1]) * (ceiling // 2) // 65536


class Link:
    def __init__(self, settings, on_command, after_reply=None):
        self.cfg = settings
        # The TLS context (sbd.tls.context, one block of about 3 KiB) is made
        # now, while the heap still has 3 KiB in one piece: made at the first
        # connection, a trial boot of an update found none (48 KiB free, no
        # run of it over 2.8 KiB) and every handshake failed. Made again at the
        # first connection if it cannot be made now.
        try:
            tls.context()
        except Exception:
            pass
        self.on_command = on_command
        self.after_reply = after_reply
        self.base = "devices/" + device.device_id()
        self.outbox = Outbox("/data/outbox")
        # Before Wi-Fi connects: DHCP and the port's mDNS responder take the name then.
        network.hostname(network_policy.hostname(device.device_id()))
        self.wlan = network.WLAN(network.STA_IF)
        # One client for the device's life: its receive buffer is allocated
        # once, so reconnecting does not fragment the heap.
        self.mqtt = MQTTClient(self.base[8:], keepalive=KEEPALIVE_S, max_packet=MAX_PACKET)
        self.mqtt.on_ack = self.acked
        self.mqtt.on_message = self.message
        self.client = None
        self.inflight = None  # (packet id, outbox seq)
        self.failures = 0
        self.assoc_since = None  # ticks when the current wait for association began
        now = time.ticks_ms()
        self.next_try = now
        self.next_sample = now
        # Updates (sbd.ota, loaded when needed): a trial of a new version
        # commits after its first acknowledged message, or restarts in time.
        from sbd import slots
        self.trial = bool(slots.state()["try"])
        if not self.trial and slots.store.get(slots.IMAGE_TRIAL_KEY):
            from sbd import appimage  # an app image on trial, if the bootloader booted it
            self.trial = appimage.trial() is not None
            if not self.trial:
                _drop("appimage")
        self.app = _app()  # read once, now, while the heap is whole: the birth message's `app`
        self.receiver = None
        self.restart_at = None
        self.commit_at = None  # a commit put off for want of heap: when to try again

    def tick(self):
        now = time.ticks_ms()
        if self.restart_at is not None and time.ticks_diff(now, self.restart_at) >= 0:
            import machine
            machine.reset()  # into the update just installed, or out of a failed trial
        if self.trial and self.restart_at is None:
            from sbd.ota import TRIAL_S
            if now > TRIAL_S * 1000:  # ticks count from the last hard reset (a soft one does not restart them)
                log("trial_timeout")
                from sbd import slots
                slots.note_exit("trial timeout")
                self.restart_at = now
        if self.commit_at is not None and time.ticks_diff(now, self.commit_at) >= 0:
            self.commit_trial()
        if time.ticks_diff(now, self.next_sample) >= 0:
            self.next_sample = time.ticks_add(now, self.cfg["telemetry_s"] * 1000)
            self.sample()
        if self.client is None:
            if time.ticks_diff(now, self.next_try) >= 0:
                self.connect()
            return
        try:
            if not self.wlan.isconnected():  # the access point is gone: so is the broker
                raise OSError("wifi lost")
            # What is waiting, a few packets per tick; while a message is in
            # flight or an update streams in, wait briefly on the socket so a
            # backlog drains quickly. Busy (True) when more may be waiting:
            # the console loop then comes straight back instead of idling.
            receiving = self.receiving()
            for _ in range(8):
                self.drain()
                if self.client is None or self.client.poll(20 if self.inflight or receiving else 0) is None:
                    break
            else:
                receiving = True
            self.drain()
        except (MQTTProtocolError, OSError) as e:
            self.drop(e)
            return False
        return receiving

    def receiving(self):
        return self.receiver is not None and self.receiver.streaming()

    def set_interval(self, seconds):
        self.cfg["telemetry_s"] = seconds
        self.next_sample = time.ticks_add(time.ticks_ms(), seconds * 1000)

    def sample(self):
        reading = {"uptime_s": time.ticks_ms() // 1000, "heap_free": gc.mem_free()}
        self.outbox.put(json.dumps(reading).encode())

    def drain(self):
        if self.inflight is not None or self.client is None:
            return
        waiting = self.outbox.pending(1)
        if waiting:
            seq, payload = waiting[0]
            message = b'{"seq": %d, "data": ' % seq + payload + b"}"
            pid = self.client.publish(self.base + "/telemetry", message, qos=1)
            self.inflight = (pid, seq)

    def acked(self, pid):
        if self.inflight is not None and self.inflight[0] == pid:
            self.outbox.ack(self.inflight[1])
            log("sent", seq=self.inflight[1])
            self.inflight = None
            if self.trial:  # health check passed: reached the broker, message acknowledged
                self.commit_trial()

    def commit_trial(self):
        # Committing checks the slot once more (signature, every hash). A heap
        # too fragmented for that right now is no reason to restart, which
        # would count as a failed trial: it is tried again a second later (the
        # health check has passed), and the trial's time limit still reverts
        # a version that never manages to commit.
        self.commit_at = None
        try:
            from sbd import ota
            gc.collect()
            reply = ota.commit()
        except MemoryError:
            gc.collect()
            log("commit_deferred", heap_free=gc.mem_free())
            self.commit_at = time.ticks_add(time.ticks_ms(), COMMIT_RETRY_MS)
            return
        self.trial = False
        _drop("appimage")  # loaded for an image's commit: the heap wants it back
        self.result(reply)

    def result(self, reply):
        if reply is not None and self.client is not None:
            self.client.publish(self.base + "/result", json.dumps(reply), qos=1)

    def message(self, topic, payload):
        if topic.startswith(self.base + "/ota/"):
            self.update(topic[len(self.base) + 5:], payload)
            return
        if topic != self.base + "/cmd":
            return
        try:
            reply = self.on_command(bytes(payload).strip())
        except MemoryError:
            reply = {"sbd": "cmd", "ok": False, "error": "busy"}
        self.client.publish(self.base + "/result", json.dumps(reply), qos=1)
        if self.after_reply is not None:
            self.after_reply(reply)

    def update(self, kind, payload):
        try:
            if self.receiver is None:
                gc.collect()
                from sbd import ota
                self.receiver = ota.Receiver(self.result)
            if kind == "data":
                self.receiver.data(payload)
            elif kind == "ctl":
                gc.collect()
                self.receiver.control(bytes(payload))
        except MemoryError as e:
            # Refuse the update, not the device: drop what it held and say so.
            import io, sys
            buf = io.StringIO(); sys.print_exception(e, buf)
            self.receiver = None
            gc.collect()
            self.result({"sbd": "ota", "event": "rejected", "error": "out of memory", "free": gc.mem_free(), "where": buf.getvalue()[-120:]})
            return
        if self.receiver.restart and self.restart_at is None:
            self.restart_at = time.ticks_add(time.ticks_ms(), 500)  # let the result go out first

    def connect(self):
        try:
            if not self.associated():
                return  # associating: look again shortly
            if not clock.sync(self.cfg.get("ntp_host"), self.cfg.get("ntp_port", 123)):
                raise OSError("clock not set")
            stream = tls.connect(self.cfg["broker_addr"], self.cfg["broker_port"], self.cfg["broker_host"])
            client = self.mqtt
            try:
                client.connect(stream, clean_session=True,
                               will=(self.base + "/state", b'{"online": false}', 1, True))
            except Exception:
                client.close()  # closes the TLS stream too
                raise
            self.client = client
            birth = {"online": True, "fw_version": version.VERSION, "model": version.MODEL,
                     "security": state.summary(),
                     # where to report a vulnerability, and until when it gets fixed
                     "security_policy": version.SECURITY_POLICY, "support_until": version.SUPPORT_UNTIL}
            birth["mud_url"] = network_policy.mud_url()  # RFC 8520: where the network finds what this device needs
            birth["interfaces"] = network_policy.interfaces()  # which radios are on, as the port says
            birth["app"] = self.app  # the app image the bootloader booted: MicroPython's, or an update's
            client.publish(self.base + "/state", json.dumps(birth), qos=1, retain=True)
            client.subscribe(self.base + "/cmd", 1)
            client.subscribe(self.base + "/ota/#", 1)
        except Exception as e:  # noqa: every failure is an outage to ride out
            self.drop(e)
            return
        self.failures = 0
        self.inflight = None
        log("connected")
        from sbd import slots
        self.result(slots.pending_incident())

    def associated(self):
        """True once Wi-Fi has an address; False while association goes on (within
        ASSOC_WAIT_MS); OSError when it failed or took longer."""
        if self.wlan.isconnected():
            self.assoc_since = None
            return True
        now = time.ticks_ms()
        if self.assoc_since is None:  # a new attempt
            self.wlan.active(True)
            if self.wlan.status() != network.STAT_CONNECTING:  # not already reassociating by itself
                self.wlan.connect(self.cfg["wifi_ssid"], self.cfg["wifi_psk"])
            self.assoc_since = now
        if self.wlan.status() == network.STAT_CONNECTING and time.ticks_diff(now, self.assoc_since) < ASSOC_WAIT_MS:
            self.next_try = time.ticks_add(now, ASSOC_POLL_MS)
            return False
        self.assoc_since = None
        raise OSError("wifi not connected")

    def drop(self, error):
        if self.client is not None:
            self.client.close()
        self.client = None
        self.inflight = None
        self.failures += 1
        delay = backoff_ms(self.failures)
        self.next_try = time.ticks_add(time.ticks_ms(), delay)
        detail = error.args[-1] if error.args else ""
        log("disconnected", reason=type(error).__name__, detail=str(detail)[:48], retry_ms=delay)


def _drop(*names):
    """Unloads sbd.<name>..., so that the heap gets their code back (modules loaded for a moment)."""
    import sys
    import sbd
    for name in names:
        sys.modules.pop("sbd." + name, None)
        if name in dir(sbd):
            delattr(sbd, name)


def _app():
    """The running app image's slot and descriptor, read by a module loaded for the moment."""
    from sbd import appimage
    try:
        return appimage.running_app()
    finally:
        _drop("appimage")
