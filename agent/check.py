"""Self-test: the technician's checklist of config, GNSS, OBD, ignition, broker, spool and clock.

``telematics-agent check --config FILE [--json] [--timeout S]`` runs every probe that does not
depend on another one concurrently, each in its own thread with its own deadline, so the whole
checklist is done within ``timeout + 3`` seconds (28 s with the default) whatever hangs. Each item
is ``pass``, ``fail``, ``warn`` (works, but something deserves attention) or ``skip`` (not
configured, or already explained by a failed item), with a detail and, when not passing, a hint
saying what to do.

Exit status: 0 when nothing failed (warnings and skips allowed), 1 when an item failed, 2 when
the configuration is missing or invalid (the checklist is still printed: the config item fails and
every other item is skipped), like every other configuration error of the agent.

Run it with the agent stopped (``systemctl stop telematics-agent``): the agent holds the serial
ports, and the adapter answers one client at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import logging
import os
import queue
import secrets
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.driverconfig import gnss_settings, gpio_settings, obd_settings
from agent.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/telematics-agent/agent.toml"
DEFAULT_TIMEOUT_S = 25.0
JOIN_GRACE_S = 3.0
EXIT_FAILED = 1
EXIT_CONFIG = 2
CLOCK_TOLERANCE_S = 2.0

GNSS_NO_DATE_HINT = (
    "the receiver sends times but no date (GGA only, no RMC or ZDA): enable RMC in its "
    "configuration (u-center, PMTK314), or give the Pi network time: while NTP keeps the clock "
    "synchronized, GGA fixes take its date"
)
GNSS_ANTENNA_HINT = (
    "the antenna needs a clear view of the sky: magnetic puck on the roof, or under a plastic "
    "(not metal, not heated-windscreen) panel; check its cable and connector; after a cold start "
    "or a long move a first fix can take several minutes"
)


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the checklist."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail,
                "hint": self.hint}


ITEMS = (
    "config", "gnss_port", "gnss_fix", "obd_adapter", "obd_vehicle", "ignition", "broker",
    "spool", "clock",
)


@dataclass(frozen=True, slots=True)
class GNSSTime:
    """A fix's UTC and the system clock when it arrived, for the clock item."""

    fix_utc: dt.datetime
    system_utc: dt.datetime


@dataclass(slots=True)
class _Probe:
    """A probe running in its own thread; ``results`` is filled when it finishes."""

    names: tuple[str, ...]
    results: list[CheckResult] = field(default_factory=list)
    gnss_time: GNSSTime | None = None
    finished: threading.Event = field(default_factory=threading.Event)


# --- GNSS -------------------------------------------------------------------------------------


def _missing_path(port: str) -> bool:
    return "://" not in port and not os.path.exists(port)


def probe_gnss(
    cfg: agent_config.Config,
    timeout_s: float,
    date_hint: Callable[[], dt.datetime | None] | None = None,
) -> tuple[list[CheckResult], GNSSTime | None]:
    """Open the receiver, wait for NMEA and a fix; two items: ``gnss_port`` and ``gnss_fix``.

    ``date_hint`` is where a GGA-only receiver's fixes get their date; by default the system
    clock while it is synchronized, as in the daemon.
    """
    from drivers.clock import synchronized_utc
    from drivers.gnss import GNSSReceiver
    from drivers.nmea import NoFixReason
    from drivers.samples import GNSSFix, LinkSample, Sample

    g = cfg.gnss
    if not g.enabled:
        return [
            CheckResult("gnss_port", Status.SKIP, "GNSS disabled (gnss.enabled = false)"),
            CheckResult("gnss_fix", Status.SKIP, "GNSS disabled"),
        ], None
    if _missing_path(g.port):
        return [
            CheckResult(
                "gnss_port", Status.FAIL, f"GNSS port {g.port} does not exist",
                "plug the GNSS receiver's USB into the Pi; `ls -l /dev/serial/by-id/` shows it; "
                f"if it is there but {g.port} is not, fix the udev rule or set gnss.port",
            ),
            CheckResult("gnss_fix", Status.SKIP, "no GNSS port"),
        ], None

    samples: queue.SimpleQueue[Sample] = queue.SimpleQueue()
    receiver = GNSSReceiver(
        gnss_settings(g, set_system_clock=False),
        samples.put,
        time.monotonic,
        date_hint=date_hint or synchronized_utc,
    )
    started = time.monotonic()
    deadline = started + timeout_s
    fix: GNSSFix | None = None
    gnss_time: GNSSTime | None = None
    last_link = ""
    receiver.start()
    try:
        while fix is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                sample = samples.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if isinstance(sample, GNSSFix):
                fix = sample
                gnss_time = GNSSTime(sample.utc, dt.datetime.now(dt.UTC))
            elif isinstance(sample, LinkSample):
                last_link = sample.reason
    finally:
        receiver.stop(timeout_s=2.0)
    waited_s = time.monotonic() - started
    stats = receiver.stats()
    sentences = stats.get("sentences_ok", 0)

    if fix is not None:
        where = f"{fix.lat:.5f}, {fix.lon:.5f}"
        quality = ", ".join(
            part for part in (
                f"{fix.mode.value}D",
                f"{fix.sats} satellites" if fix.sats is not None else "",
                f"HDOP {fix.hdop:.1f}" if fix.hdop is not None else "",
            ) if part
        )
        return [
            CheckResult("gnss_port", Status.PASS, f"NMEA flowing on {g.port}"),
            CheckResult("gnss_fix", Status.PASS,
                        f"fix after {waited_s:.1f} s at {where} ({quality})"),
        ], gnss_time
    if sentences > 0:
        reason = last_link or "no valid position"
        return [
            CheckResult("gnss_port", Status.PASS,
                        f"NMEA flowing on {g.port} ({sentences} sentences)"),
            CheckResult("gnss_fix", Status.FAIL,
                        f"no fix within {waited_s:.0f} s: the receiver reports {reason}",
                        GNSS_NO_DATE_HINT if reason == NoFixReason.NO_DATE else GNSS_ANTENNA_HINT),
        ], None
    no_fix = CheckResult("gnss_fix", Status.SKIP, "no NMEA from the receiver")
    if stats.get("bad_checksum", 0) > 0:
        return [CheckResult(
            "gnss_port", Status.FAIL,
            f"{g.port}: {stats['bad_checksum']} sentences, all with bad checksums",
            "electrical noise or a wrong speed: check the cable, set gnss.baud "
            "(0 = detect), or gnss.checksum_policy = \"accept\" for a receiver known to be sloppy",
        ), no_fix], None
    if stats.get("garbage_bytes", 0) > 0:
        return [CheckResult(
            "gnss_port", Status.FAIL,
            f"{g.port}: bytes arrive but no NMEA sentence ({stats['garbage_bytes']} bytes)",
            f"wrong serial speed: set gnss.baud to the receiver's speed (now {g.baud}; "
            "most u-blox pucks use 9600; 0 = detect automatically)",
        ), no_fix], None
    if last_link.startswith("cannot open"):
        return [CheckResult(
            "gnss_port", Status.FAIL, last_link,
            "is the agent running and holding it (`systemctl stop telematics-agent` first)? "
            "is the service user in group dialout?",
        ), no_fix], None
    return [CheckResult(
        "gnss_port", Status.FAIL,
        f"{g.port} opens but nothing arrived in {waited_s:.0f} s",
        "receiver not powered, the wrong device, or (on a UART) TX and RX swapped",
    ), no_fix], None


# --- OBD --------------------------------------------------------------------------------------


def probe_obd(cfg: agent_config.Config, timeout_s: float) -> list[CheckResult]:
    """Connect to the adapter, wait for the vehicle: items ``obd_adapter``, ``obd_vehicle``."""
    o = cfg.obd
    if not o.enabled:
        return [
            CheckResult("obd_adapter", Status.SKIP, "OBD disabled (obd.enabled = false)"),
            CheckResult("obd_vehicle", Status.SKIP, "OBD disabled"),
        ]
    if _missing_path(o.port):
        return [
            CheckResult(
                "obd_adapter", Status.FAIL, f"OBD adapter port {o.port} does not exist",
                "plug the adapter into the vehicle's OBD-II socket (under the dashboard, driver's "
                "side) and its USB cable into the Pi; `ls -l /dev/serial/by-id/` shows it; "
                f"if it is there but {o.port} is not, fix the udev rule or set obd.port",
            ),
            CheckResult("obd_vehicle", Status.SKIP, "no OBD adapter"),
        ]

    from drivers.obd import OBDReader
    from drivers.samples import LinkSample, LinkState, OBDReading, Sample, VehicleInfo

    samples: queue.SimpleQueue[Sample] = queue.SimpleQueue()
    reader = OBDReader(
        obd_settings(o),
        samples.put,
        time.monotonic,
    )
    deadline = time.monotonic() + timeout_s
    info: VehicleInfo | None = None
    up = False
    last_down = ""
    voltage_v: float | None = None
    reader.start()
    try:
        while info is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                sample = samples.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if isinstance(sample, VehicleInfo):
                info = sample
            elif isinstance(sample, LinkSample):
                if sample.state is LinkState.UP:
                    up = True
                else:
                    last_down = sample.reason
            elif isinstance(sample, OBDReading) and sample.voltage_v is not None:
                voltage_v = sample.voltage_v
    finally:
        # python-obd can sit in a blocking read for a while: do not wait for it past the budget.
        reader.stop(timeout_s=min(2.0, max(0.1, deadline + JOIN_GRACE_S / 2 - time.monotonic())))

    battery = f", battery {voltage_v:.1f} V" if voltage_v is not None else ""
    if info is not None:
        vin = info.vin or "not reported (the vehicle does not answer mode 09)"
        return [
            CheckResult("obd_adapter", Status.PASS,
                        f"{info.adapter} answering on {o.port}{battery}"),
            CheckResult("obd_vehicle", Status.PASS,
                        f"protocol {info.protocol or 'unknown'}, VIN {vin}, "
                        f"{len(info.supported_pids)} PIDs supported"),
        ]
    if up:
        low = voltage_v is not None and voltage_v < o.low_voltage_v
        return [
            CheckResult("obd_adapter", Status.PASS, f"adapter answering on {o.port}{battery}"),
            CheckResult(
                "obd_vehicle", Status.FAIL,
                f"the adapter answers but the vehicle's ECU did not within {timeout_s:.0f} s",
                "battery voltage is low: charge or start the engine"
                if low else
                "turn the ignition on (engine running, or key at position II) and check again; "
                "if it is on, the adapter may not speak this vehicle's protocol",
            ),
        ]
    reason = last_down or f"no answer within {timeout_s:.0f} s"
    if "not present" in reason or "no such device" in reason:
        hint = "the adapter was unplugged during the check: plug it in firmly and check again"
    elif "cannot open" in reason:
        hint = ("is the agent running and holding it (`systemctl stop telematics-agent` first)? "
                "is the service user in group dialout?")
    else:
        hint = ("check the serial speed (obd.baud: 38400 for most USB adapters, 0 = detect), that "
                "the adapter is powered (the OBD socket's pin 16 carries battery voltage; its LED "
                "lights), and that it is an ELM327 and not held by a running agent")
    detail = reason if reason.startswith(o.port) else f"{o.port}: {reason}"
    return [
        CheckResult("obd_adapter", Status.FAIL, detail, hint),
        CheckResult("obd_vehicle", Status.SKIP, "no OBD adapter answering"),
    ]


# --- ignition ---------------------------------------------------------------------------------


def probe_ignition(cfg: agent_config.Config, timeout_s: float) -> list[CheckResult]:
    """Read the ignition sense line once through the configured GPIO backend."""
    ig = cfg.ignition
    if ig.backend == "none":
        return [CheckResult(
            "ignition", Status.SKIP,
            "no ignition line configured (ignition.backend = none): the agent uses RPM and "
            "adapter voltage instead",
            "wire the ignition sense to a GPIO and set ignition.backend for exact trip starts",
        )]
    try:
        from drivers.errors import DriverError
        from drivers.gpio import GPIOLibraryError, open_backend
    except ImportError as exc:
        return [CheckResult(
            "ignition", Status.SKIP, f"this build has no GPIO driver ({exc})",
            "measure the ignition sense with a multimeter (docs/technician-guide.md)",
        )]
    where = (f"simulated line {ig.line_file}" if ig.backend == "simulated"
             else f"GPIO {ig.pin} ({ig.backend}, {ig.chip})" if ig.backend == "gpiod"
             else f"GPIO {ig.pin} ({ig.backend})")
    # Inputs only: the power-hold and LED outputs stay untouched (-1), since driving the
    # power-hold line low from a self-test could cut the Pi's own power.
    settings = gpio_settings(ig, power_hold_pin=-1, led_pin=-1)
    try:
        backend = open_backend(settings)
    except GPIOLibraryError as exc:
        return [CheckResult("ignition", Status.FAIL, f"{where}: {exc}",
                            "install the GPIO library named above, or pick the other backend "
                            "(rpigpio on a Pi 1-4, gpiod on every model)")]
    except (DriverError, OSError, ValueError, RuntimeError) as exc:
        if ig.backend == "gpiod" and not os.path.exists(ig.chip):
            return [CheckResult(
                "ignition", Status.FAIL, f"no GPIO chip {ig.chip}",
                "list the chips with `ls /dev/gpiochip*` and set ignition.chip (the 40-pin "
                "header is gpiochip0, or gpiochip4 on a Pi 5 with an older kernel)",
            )]
        return [CheckResult(
            "ignition", Status.FAIL, f"cannot open {where}: {exc}",
            "is the agent running and holding the line (`systemctl stop telematics-agent`)? "
            "is the service user in group gpio? ignition.pin is the BCM number, not the "
            "header pin",
        )]
    try:
        level = backend.read(ig.pin)
    except (DriverError, OSError, ValueError, RuntimeError) as exc:
        return [CheckResult("ignition", Status.FAIL, f"cannot read the ignition line: {exc}",
                            "start the simulator, or set ignition.line_file"
                            if ig.backend == "simulated" else
                            "check the chip (ignition.chip) and pin (ignition.pin)")]
    finally:
        backend.close()
    on = bool(level) != ig.active_low
    detail = f"{where}: level {'high' if level else 'low'}, ignition {'ON' if on else 'OFF'}"
    if on:
        return [CheckResult("ignition", Status.PASS, detail)]
    return [CheckResult(
        "ignition", Status.PASS, detail,
        "if the key is on and this says OFF: check the optocoupler or divider wiring, the pin "
        "number and ignition.active_low (docs/technician-guide.md)",
    )]


# --- broker -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _RoundTrip:
    """The broker's answers to the check's own subscribe, publish and echo (paho's thread)."""

    topic: str
    nonce: str
    cond: threading.Condition = field(default_factory=threading.Condition)
    granted: dict[int, Any] = field(default_factory=dict)  # SUBACK reason code by mid
    acked: dict[int, Any] = field(default_factory=dict)  # PUBACK reason code by mid
    echoed_at: float | None = None

    def on_subscribe(self, c: Any, userdata: Any, mid: int, reasons: list[Any], props: Any) -> None:
        with self.cond:
            self.granted[mid] = reasons[0] if reasons else None
            self.cond.notify_all()

    def on_publish(self, c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self.cond:
            self.acked[mid] = reason
            self.cond.notify_all()

    def on_message(self, c: Any, userdata: Any, msg: Any) -> None:
        if msg.topic != self.topic:
            return
        try:
            nonce = json.loads(msg.payload).get("nonce")
        except (ValueError, AttributeError):
            return  # someone else's message on our check topic: not ours to judge
        if nonce == self.nonce:
            with self.cond:
                self.echoed_at = time.monotonic()
                self.cond.notify_all()

    def wait(self, done: Callable[[], bool], deadline: float, closed: threading.Event) -> bool:
        """Wait until ``done()``, the deadline, or the broker closing the connection."""
        with self.cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0 or closed.is_set():
                    return done()
                # A short wait: a disconnect sets ``closed`` without notifying this condition.
                self.cond.wait(min(left, 0.05))
            return True


def _certificate_cn(path: str) -> str:
    """The certificate's common name, or "" when it cannot be read (only for a hint)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        return ""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return ""
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _broker_user(cfg: agent_config.Config) -> str:
    """Who the broker's ACL sees: the username, else the client certificate's CN (mosquitto's
    use_identity_as_username, as in config/mosquitto.example.conf)."""
    m = cfg.mqtt
    if m.username:
        return f"user {m.username}"
    if m.tls.cert_file:
        cn = _certificate_cn(m.tls.cert_file)
        return f"user {cn} (the client certificate's CN)" if cn else "the client certificate"
    return "an anonymous client"


def _acl_hint(cfg: agent_config.Config, topic: str, problem: str) -> str:
    return (f"{problem}: the ACL denies {topic} for {_broker_user(cfg)}; let the device read and "
            f"write it (mosquitto: `pattern readwrite {cfg.mqtt.prefix}/%u/check`, as in "
            "config/mosquitto.acl.example; elsewhere the device's policy)")


def probe_broker(cfg: agent_config.Config, timeout_s: float) -> list[CheckResult]:
    """Resolve, connect (TLS, authentication), then a QoS 1 round trip on the check topic.

    A PUBACK alone proves little: under MQTT 3.1.1 a broker cannot refuse a PUBLISH, so
    mosquitto acknowledges one its ACL denies and drops it. The check therefore subscribes to
    ``{prefix}/{device_id}/check`` and waits for its own message (a nonce) to come back, and
    takes an MQTT 5 PUBACK or SUBACK reason code >= 0x80 as the refusal it is.

    ``mqtt.protocol = "auto"`` is tried as the daemon does: MQTT 5 first, then 3.1.1 once the
    broker refuses 5 (within the same ``timeout_s``), so the check reports the protocol the
    agent will actually use.
    """
    from agent.publisher import UNSUPPORTED_PROTOCOL

    deadline = time.monotonic() + timeout_s
    outcome: dict[str, Any] = {}
    results = _probe_broker(cfg, deadline, cfg.mqtt.protocol != "3.1.1", outcome)
    connack = outcome.get("connack")
    if (
        cfg.mqtt.protocol == "auto"
        and connack is not None
        and connack.is_failure
        and connack.value in UNSUPPORTED_PROTOCOL
    ):
        results = _probe_broker(cfg, deadline, False, {})
    return results


def _probe_broker(
    cfg: agent_config.Config, deadline: float, v5: bool, outcome: dict[str, Any]
) -> list[CheckResult]:
    """One attempt with one protocol; ``outcome`` receives the CONNACK and DISCONNECT reasons."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.publisher import UNSUPPORTED_PROTOCOL

    m = cfg.mqtt
    name = "broker"
    where = f"{m.host}:{m.port}"
    timeout_s = max(0.0, deadline - time.monotonic())
    try:
        socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [CheckResult(name, Status.FAIL, f"cannot resolve {m.host!r}: {exc.strerror}",
                            "check mqtt.host for typos, and that the modem has a data connection "
                            "(DNS needs the network)")]
    except UnicodeError:
        return [CheckResult(name, Status.FAIL, f"invalid broker host name {m.host!r}",
                            "fix mqtt.host")]

    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    # Not the agent's own client id: the broker would disconnect a running agent's session.
    client_id = f"{m.client_id or cfg.device.id}-check"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.connect_timeout = max(0.5, min(timeout_s, 10.0))
    tls = bool(m.tls.ca_file)
    if tls:
        try:
            client.tls_set(
                ca_certs=m.tls.ca_file,
                certfile=m.tls.cert_file or None,
                keyfile=m.tls.key_file or None,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or exc
            return [CheckResult(name, Status.FAIL, f"cannot load the TLS files: {why}",
                                "mqtt.tls.ca_file, cert_file and key_file must be readable PEM "
                                "files; run `telematics-agent provision` again")]
        if m.tls.insecure_skip_hostname:
            client.tls_insecure_set(True)
    if m.username:
        password: str | None = None
        if m.password_file:
            try:
                password = Path(m.password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                return [CheckResult(name, Status.FAIL,
                                    f"cannot read mqtt.password_file {m.password_file}: "
                                    f"{getattr(exc, 'strerror', None) or exc}",
                                    "run `telematics-agent provision` again")]
        client.username_pw_set(m.username, password)

    connected = threading.Event()
    finished = threading.Event()
    socket_errors: list[str] = []

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome["connack"] = reason
        (finished if reason.is_failure else connected).set()

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome.setdefault("disconnect", reason)
        finished.set()

    def on_log(c: Any, userdata: Any, level: int, message: str) -> None:
        # paho reports a TLS alert from the broker (client certificate refused) only here.
        if level == mqtt.MQTT_LOG_ERR:
            socket_errors.append(message)

    topic = f"{m.prefix}/{cfg.device.id}/check"
    trip = _RoundTrip(topic=topic, nonce=secrets.token_hex(8))
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_log = on_log
    client.on_subscribe = trip.on_subscribe
    client.on_publish = trip.on_publish
    client.on_message = trip.on_message
    security = ", ".join(part for part in (
        "TLS" if tls else "plain MQTT, no TLS",
        "client certificate" if tls and m.tls.cert_file else "",
        f"user {m.username}" if m.username else "",
    ) if part)
    try:
        client.connect(m.host, m.port, keepalive=max(5, int(timeout_s) + 5))
    except ssl.SSLCertVerificationError as exc:
        msg = exc.verify_message or str(exc)
        if "hostname" in msg.lower() or "ip address mismatch" in msg.lower():
            hint = (f"the broker's certificate does not name {m.host!r}: use the host name in "
                    "the certificate for mqtt.host")
        elif "expired" in msg.lower() or "not yet valid" in msg.lower():
            hint = ("check the system clock (`date`; the Pi has no RTC) or renew the broker "
                    "certificate")
        else:
            hint = ("mqtt.tls.ca_file is not the CA that signed the broker's certificate: "
                    "provision again with the fleet's CA bundle")
        return [CheckResult(name, Status.FAIL,
                            f"TLS: the broker's certificate is not trusted ({msg})", hint)]
    except ssl.SSLError as exc:
        return [CheckResult(name, Status.FAIL, f"TLS handshake with {where} failed: {exc.reason}",
                            "is this port TLS (mqtts, usually 8883)? does the broker accept this "
                            "client certificate?")]
    except ConnectionRefusedError:
        return [CheckResult(name, Status.FAIL, f"connection refused by {where}",
                            "the broker is not running or not listening on this port "
                            "(mqtts is usually 8883, plain mqtt 1883); check mqtt.port")]
    except TimeoutError:
        return [CheckResult(name, Status.FAIL, f"no answer from {where} within "
                            f"{client.connect_timeout:.0f} s",
                            "a firewall or the cellular APN drops the connection, or the port is "
                            "wrong; check signal and that the SIM has data")]
    except OSError as exc:
        unreachable = exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
        return [CheckResult(name, Status.FAIL, f"cannot connect to {where}: {exc.strerror or exc}",
                            "no network route: check the modem and its data connection"
                            if unreachable else "check the network and mqtt.host/mqtt.port")]

    client.loop_start()
    try:
        while not (connected.is_set() or finished.is_set()):
            if time.monotonic() >= deadline:
                break
            connected.wait(0.05)
        if not connected.is_set():
            connack = outcome.get("connack")
            if connack is not None:
                unsupported = v5 and connack.value in UNSUPPORTED_PROTOCOL
                return [CheckResult(name, Status.FAIL,
                                    f"the broker refused the connection: {connack}",
                                    'the broker does not speak MQTT 5: set mqtt.protocol = "auto" '
                                    '(or "3.1.1")' if unsupported else _auth_hint(cfg))]
            # A broker that refuses the client certificate ends the TLS session right after the
            # handshake, with an alert (OpenSSL servers) or without one (mosquitto 2.0: paho
            # then sees "EOF occurred in violation of protocol (_ssl.c...)").
            tls_alert = next(
                (e for e in reversed(socket_errors) if "ssl" in e.lower() or "alert" in e), ""
            ) if tls else ""
            if tls_alert:
                return [CheckResult(name, Status.FAIL,
                                    f"the broker rejected this client's TLS identity ({tls_alert})",
                                    "the client certificate is missing, expired, or not signed by "
                                    "a CA the broker trusts; provision again with this device's "
                                    "certificate")]
            if finished.is_set():
                return [CheckResult(name, Status.FAIL,
                                    f"the broker closed the connection before accepting it "
                                    f"({outcome.get('disconnect')})", _auth_hint(cfg))]
            return [CheckResult(name, Status.FAIL,
                                f"connected to {where} but no CONNACK within {timeout_s:.0f} s",
                                "is this an MQTT port? a plain port reached with TLS (or the "
                                "reverse) stays silent")]
        return [_round_trip(client, cfg, trip, deadline, finished, outcome,
                            f"connected to {where} with MQTT {'5' if v5 else '3.1.1'} "
                            f"({security})")]
    finally:
        try:
            # The session is clean (3.1.1 clean session, MQTT 5 session expiry 0), so the
            # broker forgets the subscription at DISCONNECT anyway; unsubscribing first also
            # leaves nothing behind on a broker that keeps sessions regardless.
            if connected.is_set() and not finished.is_set():
                client.unsubscribe(topic)
            client.disconnect()
        finally:
            client.loop_stop()


def _round_trip(
    client: Any,
    cfg: agent_config.Config,
    trip: _RoundTrip,
    deadline: float,
    closed: threading.Event,
    outcome: dict[str, Any],
    connected_text: str,
) -> CheckResult:
    """Subscribe to the check topic, publish a nonce QoS 1 (not retained), wait for it back."""
    name, topic = "broker", trip.topic

    def gone(after: str) -> CheckResult:
        return CheckResult(name, Status.FAIL,
                           f"{connected_text}, but the broker closed the connection after {after} "
                           f"({outcome.get('disconnect')})",
                           _acl_hint(cfg, topic, "the broker closed the connection, as brokers "
                                     "may do on a refused subscribe or publish"))

    _, sub_mid = client.subscribe(topic, qos=1)
    if not trip.wait(lambda: sub_mid in trip.granted, deadline, closed):
        if closed.is_set():
            return gone(f"the check subscribed to {topic}")
        return CheckResult(name, Status.FAIL,
                           f"{connected_text}, but no SUBACK for {topic} in time",
                           "the broker or the link is very slow: check the signal; raise --timeout")
    granted = trip.granted[sub_mid]
    if granted is not None and granted.is_failure:
        return CheckResult(name, Status.FAIL,
                           f"{connected_text}, but the broker refused the subscription to "
                           f"{topic}: {granted}",
                           _acl_hint(cfg, topic, "the broker refused to let the device read"))

    payload = json.dumps({
        "check": True, "device_id": cfg.device.id, "nonce": trip.nonce,
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    })
    sent_at = time.monotonic()
    info = client.publish(topic, payload, qos=1, retain=False)
    if not trip.wait(lambda: info.mid in trip.acked, deadline, closed):
        if closed.is_set():
            return gone(f"the test publish to {topic}")
        return CheckResult(name, Status.FAIL,
                           f"{connected_text}, but the test publish to {topic} was not "
                           "acknowledged in time",
                           "the broker or the link is very slow: check the signal; raise --timeout")
    acked_ms = (time.monotonic() - sent_at) * 1000.0
    reason = trip.acked[info.mid]
    if reason is not None and reason.is_failure:
        # MQTT 5 says why; 0x87 "Not authorized" is how mosquitto reports an ACL denial.
        return CheckResult(name, Status.FAIL,
                           f"{connected_text}, but the broker refused the test publish to "
                           f"{topic}: {reason}",
                           _acl_hint(cfg, topic, "the broker refused the publish")
                           if reason.value == 0x87 else
                           f"the broker's reason is {reason}: ask its administrator")
    trip.wait(lambda: trip.echoed_at is not None, deadline, closed)
    echoed_at = trip.echoed_at
    if echoed_at is None:
        return CheckResult(name, Status.FAIL,
                           f"{connected_text}; the test publish to {topic} was acknowledged in "
                           f"{acked_ms:.0f} ms but never delivered back",
                           _acl_hint(cfg, topic, "the broker acknowledged but did not deliver"))
    return CheckResult(name, Status.PASS,
                       f"{connected_text}; test publish to {topic} acknowledged in "
                       f"{acked_ms:.0f} ms, delivered back in "
                       f"{(echoed_at - sent_at) * 1000.0:.0f} ms")


def _auth_hint(cfg: agent_config.Config) -> str:
    if cfg.mqtt.username:
        return "check mqtt.username and the password file; ask for the device's credentials"
    if cfg.mqtt.tls.cert_file:
        return ("the broker does not accept this device's certificate identity: register the "
                "device (its certificate) on the broker, or provision the right certificate")
    return "the broker requires authentication: provision a client certificate or a username"


# --- spool, clock -----------------------------------------------------------------------------


def probe_spool(cfg: agent_config.Config, timeout_s: float) -> list[CheckResult]:
    """The state directory takes a real SQLite commit, and the disk has room for the spool."""
    state_dir = Path(cfg.agent.state_dir)
    bound_mb = cfg.spool.max_bytes / 2**20
    if not state_dir.exists():
        parent = next((p for p in state_dir.parents if p.exists()), Path("/"))
        free_mb = shutil.disk_usage(parent).free / 2**20
        return [CheckResult(
            "spool", Status.WARN,
            f"{state_dir} does not exist yet ({free_mb:.0f} MiB free on {parent})",
            "the agent creates it at start (systemd StateDirectory=); run `check` again after "
            "the agent has started",
        )]
    if not state_dir.is_dir():
        return [CheckResult("spool", Status.FAIL, f"{state_dir} is not a directory",
                            "set agent.state_dir to a directory "
                            "(default /var/lib/telematics-agent)")]
    probe = state_dir / f".check-{os.getpid()}.db"
    try:
        with sqlite3.connect(probe, timeout=min(timeout_s, 5.0)) as db:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (x BLOB)")
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(4096),))
        db.close()
    except (sqlite3.Error, OSError) as exc:
        read_only = "readonly" in str(exc).lower() or "read-only" in str(exc).lower()
        return [CheckResult(
            "spool", Status.FAIL, f"cannot write a SQLite file in {state_dir}: {exc}",
            "the filesystem is read-only (overlay root? a failing SD card?)" if read_only else
            f"give the service user the directory: chown -R telematics: {state_dir}",
        )]
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            try:
                Path(f"{probe}{suffix}").unlink(missing_ok=True)
            except OSError:
                logger.debug("cannot remove %s%s", probe, suffix)
    free_mb = shutil.disk_usage(state_dir).free / 2**20
    detail = (f"{state_dir} writable (SQLite commit ok); {free_mb:.0f} MiB free, "
              f"spool bound {bound_mb:.0f} MiB")
    if free_mb < bound_mb:
        return [CheckResult(
            "spool", Status.FAIL, detail + ": not enough room for a full spool",
            "free disk space, use a larger SD card, or lower spool.max_bytes",
        )]
    return [CheckResult("spool", Status.PASS, detail)]


def ntp_synchronized(timeout_s: float = 3.0) -> bool | None:
    """systemd-timesyncd's view: True, False, or None when it cannot be asked (no systemd)."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    value = out.stdout.strip()
    return True if value == "yes" else False if value == "no" else None


def probe_clock(ntp: bool | None, gnss_time: GNSSTime | None) -> CheckResult:
    if ntp:
        return CheckResult("clock", Status.PASS, "system clock synchronized by NTP")
    ntp_text = (
        "NTP not synchronized" if ntp is False else "NTP status unknown (timedatectl unavailable)"
    )
    if gnss_time is not None:
        offset_s = (gnss_time.system_utc - gnss_time.fix_utc).total_seconds()
        if abs(offset_s) <= CLOCK_TOLERANCE_S:
            return CheckResult("clock", Status.PASS,
                               f"{ntp_text}; system clock agrees with GNSS ({offset_s:+.1f} s)")
        return CheckResult(
            "clock", Status.WARN,
            f"{ntp_text}; system clock is {offset_s:+.0f} s off GNSS time "
            f"(GNSS says {gnss_time.fix_utc:%Y-%m-%d %H:%M:%S} UTC)",
            "records use GNSS time once there is a fix; to fix the system clock give the device "
            "NTP, or set gnss.set_system_clock = true",
        )
    year = dt.datetime.now(dt.UTC).year
    return CheckResult(
        "clock", Status.WARN,
        f"{ntp_text} and no GNSS fix: no trusted time source yet (system clock says {year})",
        "the Pi has no real-time clock: it needs NTP (a data connection) or a GNSS fix; "
        "records carry time_source = system until then",
    )


# --- the checklist ----------------------------------------------------------------------------


def _start(names: tuple[str, ...], target: Callable[[_Probe], None]) -> _Probe:
    """Run ``target`` in a daemon thread: a probe stuck in a driver never blocks the exit."""
    probe = _Probe(names=names)

    def body() -> None:
        try:
            target(probe)
        finally:
            probe.finished.set()

    threading.Thread(target=body, name=f"check-{names[0]}", daemon=True).start()
    return probe


def _guarded(names: tuple[str, ...], fn: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    try:
        return fn()
    except Exception as exc:
        # Supervision point: one probe's bug must not take the checklist down with a traceback.
        logger.debug("check %s failed", names[0], exc_info=True)
        return [CheckResult(n, Status.FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                            "report this as a bug with `telematics-agent check --json` output")
                for n in names]


def run_checks(config_path: str | Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[CheckResult]:
    """Every checklist item, in the order of :data:`ITEMS`, within ``timeout_s + 3`` seconds."""
    started = time.monotonic()
    try:
        cfg = agent_config.load(config_path)
    except ConfigError as exc:
        hint = (
            "provision the device (`telematics-agent provision`, docs/technician-guide.md) or "
            "pass --config" if "not found" in str(exc) else
            "fix the named key (docs/configuration.md), or run `telematics-agent provision` again"
        )
        return [CheckResult("config", Status.FAIL, str(exc), hint)] + [
            CheckResult(n, Status.SKIP, "needs a valid configuration") for n in ITEMS[1:]]
    results: list[CheckResult] = [CheckResult(
        "config", Status.PASS,
        f"{config_path}: device {cfg.device.id}, broker {cfg.mqtt.host}:{cfg.mqtt.port} "
        f"(config {cfg.digest()})",
    )]

    def gnss(p: _Probe) -> None:
        def body() -> list[CheckResult]:
            items, p.gnss_time = probe_gnss(cfg, timeout_s)
            return items
        p.results = _guarded(p.names, body)

    def simple(fn: Callable[[agent_config.Config, float], list[CheckResult]]
               ) -> Callable[[_Probe], None]:
        def target(p: _Probe) -> None:
            p.results = _guarded(p.names, lambda: fn(cfg, timeout_s))
        return target

    ntp_result: list[bool | None] = []
    probes = [
        _start(("gnss_port", "gnss_fix"), gnss),
        _start(("obd_adapter", "obd_vehicle"), simple(probe_obd)),
        _start(("ignition",), simple(probe_ignition)),
        _start(("broker",), simple(probe_broker)),
        _start(("spool",), simple(probe_spool)),
        _start(("ntp",), lambda p: ntp_result.append(ntp_synchronized(min(timeout_s, 3.0)))),
    ]
    deadline = started + timeout_s + JOIN_GRACE_S
    for probe in probes:
        probe.finished.wait(max(0.0, deadline - time.monotonic()))
    by_name: dict[str, CheckResult] = {}
    for probe in probes[:-1]:
        if not probe.finished.is_set() or not probe.results:
            for n in probe.names:
                by_name[n] = CheckResult(
                    n, Status.FAIL, f"did not finish within {timeout_s + JOIN_GRACE_S:.0f} s",
                    "a device or the network hangs; check it by hand and report this")
        else:
            by_name.update((r.name, r) for r in probe.results)
    gnss_time = probes[0].gnss_time if probes[0].finished.is_set() else None
    by_name["clock"] = probe_clock(ntp_result[0] if ntp_result else None, gnss_time)
    results += [by_name[n] for n in ITEMS[1:]]
    return results


def exit_code(results: list[CheckResult]) -> int:
    config = next(r for r in results if r.name == "config")
    if config.status is Status.FAIL:
        return EXIT_CONFIG
    return EXIT_FAILED if any(r.status is Status.FAIL for r in results) else 0


def render_text(results: list[CheckResult], config_path: str) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"telematics-agent check: {config_path}"]
    for r in results:
        lines.append(f"  {r.status.value.upper():4}  {r.name:{width}}  {r.detail}")
        if r.hint:
            lines.append(f"  {'':4}  {'':{width}}  hint: {r.hint}")
    failed = sum(r.status is Status.FAIL for r in results)
    warned = sum(r.status is Status.WARN for r in results)
    lines.append(
        f"result: {'FAIL' if failed else 'OK'}: {failed} failed, {warned} warnings, "
        f"{len(results)} checks"
    )
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = subparsers.add_parser(
        "check",
        help="technician self-test: config, GNSS, OBD, ignition, broker, spool, clock",
        description=(
            "Check everything a working install needs and say what to fix. Exit 0 when nothing "
            "failed, 1 when a check failed, 2 when the configuration is missing or invalid."
        ),
    )
    sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    sp.add_argument("--json", action="store_true", help="one JSON object for scripts")
    sp.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                    help=f"seconds each check may take (default {DEFAULT_TIMEOUT_S:.0f})")
    sp.add_argument("--verbose", action="store_true", help="show the drivers' log lines too")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        # The checklist is the output: the drivers' transitions and pint's import chatter
        # (python-obd pulls it in) would only interleave with it on stderr.
        logging.getLogger().setLevel(logging.ERROR)
        logging.getLogger("pint").setLevel(logging.ERROR)
    timeout_s = float(args.timeout)
    if not 0.5 <= timeout_s <= 600:
        print("check: --timeout must be from 0.5 to 600 seconds", file=sys.stderr)
        return EXIT_CONFIG
    results = run_checks(args.config, timeout_s)
    code = exit_code(results)
    if args.json:
        print(json.dumps({
            "ok": code == 0,
            "config": str(args.config),
            "checks": [r.to_json() for r in results],
        }))
    else:
        print(render_text(results, str(args.config)))
    return code
