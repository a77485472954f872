"""A subscriber on the lab broker that keeps every message a device sent.

Checks watch a device's topics through it: the birth message, telemetry and
command results. It resubscribes whenever it reconnects, so it rides out the
broker restarts that the outage checks cause.

By default it is the lab's monitor, on the broker's lab port; given an
`identity`, it is a probe client of that name on the devices' port, confined
as a device of that name would be (the broker checks use that).
"""
from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from sbd_harness.lab.broker import Broker


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        try:
            return json.loads(self.payload)
        except ValueError:
            return None


class Watcher:
    def __init__(self, broker: Broker, topic: str, persistent: bool = False, identity: str | None = None):
        self.topic = topic
        self.broker = broker
        self.all: list[Message] = []
        self.disconnects = 0  # times the broker or the network dropped it (pause() counts too)
        self._new: queue.Queue[Message] = queue.Queue()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()  # the broker acknowledged the subscription to `topic`
        self._initial_mid: int | None = None
        self._acked_mids: set[int] = set()
        self._ack = threading.Condition(self._lock)
        self.client = broker.monitor(persistent) if identity is None else broker.client(identity, persistent)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        _, self._initial_mid = client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid == self._initial_mid:
            self._subscribed.set()
        with self._ack:
            self._acked_mids.add(mid)
            self._ack.notify_all()

    def wait_subscribed(self, timeout: float = 10) -> bool:
        """Until the broker acknowledged the watcher's subscription: what is published from then on reaches it."""
        return self._subscribed.wait(timeout)

    def subscribe(self, topics: list[tuple[str, int]], timeout: float = 10) -> bool:
        """More topic filters; returns once the broker acknowledged them (False after `timeout`)."""
        _, mid = self.client.subscribe(topics)
        with self._ack:
            return self._ack.wait_for(lambda: mid in self._acked_mids, timeout)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self.disconnects += 1

    def _on_message(self, client, userdata, msg) -> None:
        m = Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
        with self._lock:
            self.all.append(m)
        self._new.put(m)

    def pause(self) -> None:
        """Disconnects and stays away (while a stand-in holds the broker's address:
        it must not reconnect there). A persistent session misses nothing meanwhile."""
        self.client.disconnect()
        self.client.loop_stop()

    def resume(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.reconnect()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.client.loop_start()

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, acked: float | None = None) -> None:
        """Publishes; with `acked`, waits up to that many seconds for the broker's acknowledgement
        (QoS 1: the broker has taken the message and routed it to its subscribers)."""
        info = self.client.publish(topic, payload, qos=qos)
        if acked is not None:
            info.wait_for_publish(acked)

    def wait_for(self, match: Callable[[Message], bool], timeout: float) -> Message | None:
        """The next new message that matches, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                m = self._new.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if match(m):
                return m

    def arrivals(self, match: Callable[[Message], bool], count: int, timeout: float) -> Iterator[Message]:
        """Up to `count` new matching messages within `timeout` seconds, each
        as it arrives (the demo shows them live)."""
        deadline = time.monotonic() + timeout
        for _ in range(count):
            m = self.wait_for(match, deadline - time.monotonic())
            if m is None:
                return
            yield m

    def collect(self, match: Callable[[Message], bool], count: int, timeout: float) -> list[Message]:
        """Up to `count` new matching messages within `timeout` seconds."""
        return list(self.arrivals(match, count, timeout))

    def seen(self, match: Callable[[Message], bool]) -> list[Message]:
        with self._lock:
            return [m for m in self.all if match(m)]

    def close(self) -> None:
        # Disconnecting first wakes the network thread, which then ends at once; stopped first,
        # it would sit out its one-second select before noticing.
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def on_topic(topic: str) -> Callable[[Message], bool]:
    return lambda m: m.topic == topic
