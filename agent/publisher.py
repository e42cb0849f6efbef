"""Publisher: the one thread that owns the paho client and drains the spool to the broker."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MQTTSection
from agent.encoder import Identity, Lane, Message
from agent.spool import Spool

logger = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], None]

# MQTT 5 session expiry: the broker keeps our cmd subscription and queued commands this long
# while the van is off or out of coverage (a long weekend).
SESSION_EXPIRY_S = 4 * 24 * 3600
CONNACK_TIMEOUT_S = 15.0
# Longest network wait: keepalive pings and timers need a turn this often. Everything else
# (packets, new work, stop) ends the wait at once.
IDLE_WAIT_S = 1.0
# CONNACK codes that mean "this broker does not speak MQTT 5": 0x84 (v5 reason code) and 1
# (the 3.1.1 return code "unacceptable protocol version", which 3.1.1-only brokers send).
UNSUPPORTED_PROTOCOL = frozenset({0x84, 1})


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class Backoff:
    """Exponential backoff with full jitter between ``low_s`` and ``high_s``."""

    def __init__(self, low_s: float, high_s: float, rng: random.Random | None = None) -> None:
        self.low_s = low_s
        self.high_s = max(high_s, low_s)
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.high_s, self.low_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return float(self.low_s + self._rng.random() * max(0.0, ceiling - self.low_s))

    def reset(self) -> None:
        self._attempt = 0


class Publisher:
    """Drains the spool with QoS 1; acknowledges an entry only on its PUBACK.

    paho is not thread-safe for our purposes, so every call on the client happens on this
    thread; other threads hand over live positions and state through small locked slots.
    paho callbacks only record what happened; the thread acts on it after ``loop()`` returns,
    so a callback never tears down the client that is calling it.

    Entries committed before the current connection came up (the backlog after an outage or a
    restart) go out with ``historical: true``; the live lane never waits behind them.
    """

    def __init__(
        self,
        settings: MQTTSection,
        identity: Identity,
        spool: Spool,
        *,
        birth: Callable[[bool], Mapping[str, Any]],
        on_command: CommandHandler | None = None,
        password: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.spool = spool
        self._birth = birth
        self._on_command = on_command
        self._password = password
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        # Other threads write a byte here when there is new work (spool entries, the live
        # position, a command result), so the network wait below ends at once instead of
        # polling the spool several times a second.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._live: Message | None = None
        self._live_sent_at = -1e9
        self._extra: list[Message] = []
        self._inflight: dict[int, int] = {}  # paho mid -> spool entry id
        self._acks: list[int] = []  # PUBACKed entries, deleted from the spool in one batch
        self._topics: dict[int, str] = {}  # paho mid -> topic, to name a refused publish
        self._extra_mids: set[int] = set()  # command results and state in flight
        # Set when the broker refuses one of our publishes (ACL); cleared by the next accepted
        # one. mosquitto also drops the link after several refusals: the reason is this.
        self._rejection = ""
        self._backoff = Backoff(settings.backoff_min_s, settings.backoff_max_s, rng)
        self._next_attempt = 0.0
        self._connect_started = 0.0
        self._hold_until = 0.0
        self._client: mqtt.Client | None = None
        self._failure: str | None = None
        self._paho_error = ""
        self._live_edge_id = 0
        # The drain starts once the broker has acknowledged the birth message: state "online"
        # precedes data, and an ACL refusal of our own topics shows up here with a clear
        # reason (mosquitto drops an MQTT 5 client that publishes QoS 0 where it may not).
        self._birth_mid: int | None = None
        self._birth_acked = False
        self._retry_now = False
        # "auto" starts with MQTT 5 and falls back to 3.1.1 for good once a broker refuses it.
        self.protocol = "3.1.1" if settings.protocol == "3.1.1" else "5"
        self.connected = False
        self.last_progress = time.monotonic()
        self.last_error = ""
        self.reconnects = 0
        self.published = 0
        self.acked = 0
        self.bytes_sent = 0
        self.rejected = 0
        self.requeued = 0
        self.window = settings.max_inflight

    # -- called from other threads -------------------------------------------------------------

    def publish_live(self, message: Message) -> None:
        """Publish the newest position on the retained live topic (only the newest is kept)."""
        with self._lock:
            self._live = message
        self.wake()

    def publish_now(self, message: Message) -> None:
        """Publish a non-spooled message (command results, state) at the next chance."""
        with self._lock:
            if len(self._extra) < 1000:
                self._extra.append(message)
        self.wake()

    def wake(self) -> None:
        """New work is waiting (the daemon calls this after committing to the spool)."""
        # A full buffer already holds a wake-up; a closed one means we stopped.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"w")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        self.wake()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "protocol": self.protocol,
            "last_error": self.last_error,
            "reconnects": self.reconnects,
            "published": self.published,
            "acked": self.acked,
            "rejected": self.rejected,
            "requeued": self.requeued,
            "inflight": len(self._inflight),
            "window": self.window,
            "bytes_sent": self.bytes_sent,
        }

    # -- the publisher thread ------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = self.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id or self.identity.device_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # A persistent session keeps our command subscription and QoS 1 state across drops
            # (MQTT 5 sets it per connect with clean_start instead).
            clean_session=None if v5 else False,
        )
        client.max_inflight_messages_set(s.max_inflight)
        # Unbounded: we never queue more than max_inflight ourselves.
        client.max_queued_messages_set(0)
        if s.username:
            client.username_pw_set(s.username, self._password)
        if s.tls.ca_file:
            client.tls_set(
                ca_certs=s.tls.ca_file,
                certfile=s.tls.cert_file or None,
                keyfile=s.tls.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            if s.tls.insecure_skip_hostname:
                client.tls_insecure_set(True)
        offline = encode_payload(self._birth(False))
        client.will_set(self.identity.topic("state"), offline, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_progress = time.monotonic()
            try:
                self._step()
            except Exception:
                # Supervision point: log, drop the connection, and retry with backoff.
                logger.exception("publisher step failed; reconnecting")
                self._fail("internal error (see the log)")
        self._shutdown()
        self._wake_r.close()
        self._wake_w.close()

    def _step(self) -> None:
        now = time.monotonic()
        if self._client is None:
            if now < self._next_attempt:
                # Backoff: nothing to do until the next attempt (stop() ends the wait at once).
                self._stop.wait(min(IDLE_WAIT_S, self._next_attempt - now))
                return
            self._connect()
            return
        if self.connected and self._birth_acked and now >= self._hold_until:
            self._fill_window()
        wait_s = IDLE_WAIT_S
        if now < self._hold_until:
            wait_s = min(wait_s, self._hold_until - now)
        rc = self._network(self._client, wait_s)
        self._flush_acks()
        if self._failure is not None:
            why, self._failure = self._failure, None
            self._fail(why)
        elif rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._fail(self._lost_reason(rc))
        elif not self.connected and now - self._connect_started > CONNACK_TIMEOUT_S:
            self._fail(f"no CONNACK within {CONNACK_TIMEOUT_S:.0f} s")

    def _network(self, client: mqtt.Client, timeout_s: float) -> MQTTErrorCode:
        """One turn of paho's network loop, through its external-loop API (socket(),
        loop_read/write/misc), waiting on the broker's socket and on our wake-up pair.

        paho's own loop() wakes only for the socket (and publishes made on other threads), so
        new spool entries had to be polled for; here the thread sleeps until a packet arrives,
        a packet can be written, new work is announced (``wake``) or ``timeout_s`` passes (for
        keepalive pings and timers).
        """
        sock = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        # TLS may hold decrypted bytes the socket no longer signals: read them without waiting.
        pending = sock.pending() if hasattr(sock, "pending") else 0
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select(
                [sock, self._wake_r], wlist, [], 0.0 if pending else timeout_s
            )
        except (OSError, ValueError, TypeError):
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        if sock in readable or pending:
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return rc
        if sock in writable:
            rc = client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return rc
        return client.loop_misc()

    def _lost_reason(self, rc: MQTTErrorCode) -> str:
        detail = self._paho_error
        tls_level = any(w in detail.lower() for w in ("certificate", "alert", "_ssl.c", "ssl"))
        if not self.connected and self.settings.tls.ca_file and tls_level:
            # With TLS 1.3 the client finishes its handshake before the broker checks our
            # certificate; a broker that refuses it just closes (or sends an alert), which
            # paho only logs. Say what it almost certainly means.
            return (
                "TLS: the broker rejected our client certificate"
                f" {self.settings.tls.cert_file or '(none configured)'}: check that the"
                f" broker's CA issued it and that it is valid now ({detail})"
            )
        base = "connection lost" if self.connected else "connection closed before CONNACK"
        return f"{base} ({mqtt.error_string(rc)}{': ' + detail if detail else ''})"

    def _connect(self) -> None:
        s = self.settings
        self._paho_error = ""
        try:
            self._client = self._make_client()
        except ssl.SSLError as exc:
            self._fail(
                f"TLS: cannot use the client certificate {s.tls.cert_file} with the key"
                f" {s.tls.key_file} ({exc.reason or exc})"
            )
            return
        except OSError as exc:
            self._fail(f"TLS: cannot read {exc.filename or 'a TLS file'} ({exc.strerror or exc})")
            return
        self._connect_started = time.monotonic()
        kwargs: dict[str, Any] = {}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        try:
            self._client.connect(s.host, s.port, keepalive=s.keepalive_s, **kwargs)
        except ssl.SSLCertVerificationError as exc:
            self._fail(
                f"TLS: the broker's certificate is not trusted by {s.tls.ca_file}"
                f" ({exc.verify_message or exc.reason})"
            )
        except ssl.SSLError as exc:
            self._fail(f"TLS handshake with {s.host}:{s.port} failed ({exc.reason or exc})")
        except (ConnectionRefusedError, TimeoutError) as exc:
            self._fail(f"cannot reach {s.host}:{s.port} ({exc})")
        except socket.gaierror as exc:
            self._fail(f"cannot resolve {s.host} ({exc.strerror})")
        except OSError as exc:
            self._fail(f"cannot connect to {s.host}:{s.port} ({exc.strerror or exc})")
        except ValueError as exc:
            self._fail(f"bad broker settings ({exc})")

    def _fail(self, why: str) -> None:
        delay = 0.0 if self._retry_now else self._backoff.next_delay()
        self._retry_now = False
        if why != self.last_error:
            level = logging.ERROR if why.startswith(("TLS", "broker refused")) else logging.WARNING
            logger.log(level, "broker link down: %s; retrying in %.1f s", why, delay)
        self.last_error = why
        self._drop_connection()
        self._next_attempt = time.monotonic() + delay

    def _fall_back(self, why: str) -> None:
        logger.warning("broker does not accept MQTT 5 (%s): using MQTT 3.1.1 from now on", why)
        self.protocol = "3.1.1"
        self._retry_now = True

    def _flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            self.spool.ack_many(acks)

    def _drop_connection(self) -> None:
        self._flush_acks()
        client, self._client = self._client, None
        was = self.connected
        self.connected = False
        self._birth_acked = False
        self._birth_mid = None
        if client is not None:
            try:
                client.disconnect()
                client.loop(timeout=0.01)
            except Exception:
                pass
            sock = client.socket()
            if sock is not None:
                sock.close()
        # In-flight entries go back to the spool; they are re-sent on the next connection
        # (the broker may have them already: these are the duplicates dedup by seq removes).
        for entry_id in self._inflight.values():
            self.spool.nack(entry_id)
            self.requeued += 1
        self._inflight.clear()
        self._topics.clear()
        self._extra_mids.clear()
        if was:
            self.reconnects += 1

    def _fill_window(self) -> None:
        assert self._client is not None
        with self._lock:
            live, self._live = self._live, None
            extra, self._extra = self._extra, []
        for m in extra:
            info = self._send(m.topic, m.payload, retain=m.retain, qos=1)
            if info is not None:
                self._extra_mids.add(info.mid)
        if live is not None:
            now = time.monotonic()
            if now - self._live_sent_at >= self.settings.live_min_interval_s:
                if self._send(live.topic, live.payload, retain=True, qos=0) is not None:
                    self._live_sent_at = now
            else:
                # Too soon: keep it for later unless a newer position has arrived meanwhile.
                with self._lock:
                    if self._live is None:
                        self._live = live
        room = (
            self.window
            - len(self._inflight)
            - len(self._extra_mids)
            - (self._birth_mid is not None)
        )
        if room <= 0:
            return
        for entry in self.spool.take(room):
            payload = entry.message.payload
            if entry.id <= self._live_edge_id and entry.message.lane is not Lane.STATE:
                payload = {**payload, "historical": True}
            info = self._send(entry.message.topic, payload, entry.message.retain, 1)
            if info is None:
                self.spool.nack(entry.id)
                break
            self._inflight[info.mid] = entry.id
            self._topics[info.mid] = entry.message.topic

    def _send(
        self, topic: str, payload: Mapping[str, Any], retain: bool, qos: int
    ) -> mqtt.MQTTMessageInfo | None:
        assert self._client is not None
        data = encode_payload(payload)
        info = self._client.publish(topic, data, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        self.published += 1
        self.bytes_sent += len(data) + len(topic) + 4
        return info

    # -- paho callbacks (run on this thread, inside loop()) ------------------------------------

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # paho swallows socket and TLS errors after the handshake (a rejected client
        # certificate arrives as an alert on the first read) and only logs them.
        if level == mqtt.MQTT_LOG_ERR:
            logger.debug("paho: %s", buf)
            # Keep the first error of an attempt: later ones only say the socket is gone.
            if not self._paho_error:
                self._paho_error = buf

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            if (
                reason.value in UNSUPPORTED_PROTOCOL
                and self.protocol == "5"
                and self.settings.protocol == "auto"
            ):
                self._fall_back(str(reason))
                self._failure = "broker refused MQTT 5; retrying with 3.1.1"
                return
            self._failure = f"broker refused the connection: {reason}"
            return
        self.connected = True
        # An MQTT 5 broker may allow fewer unacknowledged QoS 1 messages than we would send
        # (its Receive Maximum); exceeding it is a protocol error. paho neither reads the
        # property nor lets us change its window once connected, so ours narrows instead,
        # counting the birth and command results in flight too.
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self.window = self.settings.max_inflight
        if isinstance(receive_max, int) and receive_max > 0:
            self.window = min(self.window, receive_max)
        if not self._rejection:
            # After a refusal the link comes up fine and fails again: keep backing off.
            self._backoff.reset()
        if self.last_error and not self._rejection:
            logger.info(
                "broker link up (%s:%d, MQTT %s)",
                self.settings.host,
                self.settings.port,
                self.protocol,
            )
        if not self._rejection:
            self.last_error = ""
        # Everything committed so far is backlog from this connection's point of view.
        self._live_edge_id = self.spool.last_id
        client.subscribe(self.identity.topic("cmd/+"), qos=1)
        self._birth_acked = False
        info = client.publish(
            self.identity.topic("state"), encode_payload(self._birth(True)), qos=1, retain=True
        )
        self._birth_mid = info.mid

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if self.connected and not self._stop.is_set() and self._failure is None:
            self._failure = (
                f"broker closed the connection after it {self._rejection}"
                if self._rejection
                else f"broker closed the connection: {reason}"
            )

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._extra_mids.discard(mid)
        if mid == self._birth_mid:
            self._birth_mid = None
            if reason.is_failure:
                self._failure = (
                    f"broker refused our state topic {self.identity.topic('state')}: {reason}"
                    f" (is device.id {self.identity.device_id!r} the identity the broker"
                    " knows us by: client certificate CN or username?)"
                )
            else:
                self._birth_acked = True
            return
        entry_id = self._inflight.pop(mid, None)
        topic = self._topics.pop(mid, "?")
        if entry_id is None:
            return
        if reason.is_failure:
            # The broker will not take this message (e.g. ACL "not authorized" in a v5 PUBACK).
            # It stays in the spool; the drain pauses for a backoff so we do not hammer.
            self.rejected += 1
            delay = self._backoff.next_delay()
            logger.error(
                "broker rejected a message on %s (%s); kept in the spool, retrying in %.1f s",
                self.identity.device_id,
                reason,
                delay,
            )
            self._rejection = f"rejected a publish on {topic}: {reason}"
            self.last_error = f"broker {self._rejection}"
            self._hold_until = time.monotonic() + delay
            self.spool.nack(entry_id)
            return
        if self._rejection:
            self._rejection = ""
            self._backoff.reset()
        self._acks.append(entry_id)
        self.acked += 1

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        prefix = self.identity.topic("cmd/")
        if self._on_command is None or not msg.topic.startswith(prefix):
            return
        name = msg.topic[len(prefix) :]
        if "/" in name:
            return  # our own results, or something else below cmd/
        self._on_command(name, bytes(msg.payload))

    def _shutdown(self) -> None:
        client = self._client
        if client is None or not self.connected:
            self._drop_connection()
            return
        # A clean stop commits the positions that waited in memory just before we got here:
        # keep draining the spool (and what is in flight) for a moment, then say goodbye, so a
        # van switched off in coverage leaves nothing behind.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and self.connected:
            if self._birth_mid is None:
                self._fill_window()
            if not self._inflight and not self._extra_mids and self._birth_mid is None:
                break
            client.loop(timeout=0.05)
        self._flush_acks()
        if not self.connected or self._client is not client:
            # The link dropped while draining: the broker's last will says offline for us.
            self._drop_connection()
            return
        info = client.publish(
            self.identity.topic("state"), encode_payload(self._birth(False)), qos=1, retain=True
        )
        deadline = time.monotonic() + 1.0
        # paho's is_published() raises once the publish has failed (link gone): stop waiting.
        while (
            info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self.connected
            and not info.is_published()
            and time.monotonic() < deadline
        ):
            client.loop(timeout=0.05)
        self._drop_connection()
