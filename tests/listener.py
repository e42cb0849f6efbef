"""Listener: a real paho subscriber that collects what a test's broker receives.

Closing a listener checks everything it received against the MQTT contract
(``tests.contract.capture_problems``) and raises AssertionError on any violation. The
``listeners_are_contract_checked`` fixture in ``tests/conftest.py`` closes, and so checks, every
listener a test leaves open: no test observes MQTT traffic without validating all of it.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.contract import capture_problems


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Listener:
    """Subscribes to ``topic`` on a broker and keeps every message, reconnecting across outages.

    :meth:`close` validates every message received (see the module docstring).
    """

    # Listeners not closed yet, so the conftest fixture can close (and check) what a test leaves
    # open. Weak: a closed listener is forgotten here; an open one is kept alive by paho anyway.
    _open: ClassVar[weakref.WeakSet[Listener]] = weakref.WeakSet()

    def __init__(self, host: str, port: int, topic: str = "#", *, client_id: str = "") -> None:
        self.messages: list[Received] = []
        self._closed = False
        self._cond = threading.Condition()
        self._topic = topic
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-listener-{id(self)}",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        # paho annotates the delays as int, but only ever sleeps on them; sub-second delays keep
        # the listener's reconnects after a broker restart fast.
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self._subscribed = threading.Event()
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.client.loop_stop()
            raise RuntimeError(f"listener could not subscribe on {host}:{port}")
        Listener._open.add(self)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        client.subscribe(self._topic, qos=1)
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def on_topic(self, suffix: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def contract_problems(self) -> list[str]:
        """Every contract violation among the messages received so far."""
        with self._cond:
            received = list(self.messages)
        return capture_problems(received)[1]

    def close(self) -> None:
        """Disconnect, then raise AssertionError if any message received broke the contract."""
        if self._closed:
            return
        self._closed = True
        Listener._open.discard(self)
        self.client.loop_stop()
        self.client.disconnect()
        found = self.contract_problems()
        if found:
            raise AssertionError(
                f"listener on {self._topic}: {len(found)} contract problems in what it received:"
                "\n  " + "\n  ".join(found[:20])
            )

    @classmethod
    def close_all(cls) -> None:
        """Close every listener still open; raise naming each one that saw a contract violation."""
        failures: list[str] = []
        for sub in list(cls._open):
            try:
                sub.close()
            except AssertionError as exc:
                failures.append(str(exc))
        if failures:
            raise AssertionError("\n".join(failures))
