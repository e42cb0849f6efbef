"""Daemon: the composition root that builds, starts and stops every component."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from agent import __version__
from agent.clock import Clock, SystemClock
from agent.commands import CommandError, CommandProcessor
from agent.config import Config, load
from agent.detectors import build_detectors
from agent.driverconfig import gnss_settings, gpio_settings, obd_settings
from agent.encoder import Encoder, Identity, Lane, Message, read_boot_id
from agent.engine import EngineSummarizer
from agent.errors import ConfigError
from agent.events import Detector
from agent.geofence import configured_geofences
from agent.health import DeviceStatus, ProgressMonitor, system_fields, versions
from agent.notify import Notifier
from agent.overrides import Overrides
from agent.pipeline import PipelineCore, PipelineThread
from agent.publisher import Publisher
from agent.reporter import PositionReporter, ReportReason, position_from_fix
from agent.sequence import SequenceCounter
from agent.spool import Spool
from agent.status import link_status_file, status_path, write_status
from agent.timebase import TimeBase, iso
from drivers.samples import IgnitionSample, Sample, VehicleInfo

logger = logging.getLogger(__name__)

# Test hooks: with TELEMATICS_TEST_HOOKS=1 in the environment, SIGUSR2 stalls the pipeline thread,
# SIGUSR1 stalls the publisher thread at the next command it receives, and SIGRTMIN stalls the
# next driver thread that emits a sample until a pending remote configuration change is settled
# (a change that breaks a driver), so tests can watch the watchdog pings stop and a change roll
# back. Without the variable these signals keep their default action (terminate), so nothing in
# production can trigger a stall.
TEST_HOOKS_ENV = "TELEMATICS_TEST_HOOKS"
STOP_BUDGET_S = 4.5  # systemd and the issue allow 5 s from SIGTERM to exit
STATUS_EVERY_S = 2.0
# The main thread's housekeeping period. Every wake-up of a thread costs CPU (about 0.1 ms on a
# virtual machine), so it wakes once a second, or at once for a signal (see ``_wake``).
LOOP_S = 1.0
# Stages must show progress within this many seconds when there is no systemd watchdog.
DEFAULT_STALL_AFTER_S = 15.0
FIX_FRESH_S = 10.0
HEALTH_MIN_GAP_S = 5.0


class Component(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout_s: float = ...) -> None: ...


def build_detector(cfg: Config) -> Detector:
    """Every configured detector; the geofences file is read here, not in the pure detectors."""
    fences = configured_geofences(cfg.detect.geofences_file)
    logger.info(
        "loaded %d geofences from %s", len(fences.fences), cfg.detect.geofences_file or "(none)"
    )
    return build_detectors(cfg, fences)


def build_reporter(cfg: Config) -> PositionReporter:
    return PositionReporter(cfg.report, cfg.detect.motion, cfg.detect.ignition)


class Daemon:
    """Builds components from a config, starts them in dependency order, stops them in reverse."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.state_dir = Path(cfg.agent.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.overrides = Overrides(self.state_dir)
        cfg = self.overrides.apply(cfg)
        self.cfg = cfg
        self.clock: Clock = clock or SystemClock(cfg.agent.time_scale)
        self.started_mono = time.monotonic()
        self.identity = Identity(cfg.device.id, read_boot_id(), cfg.mqtt.prefix)
        self.seq = SequenceCounter(self.state_dir / "seq")
        self.spool = Spool(
            self.state_dir / "spool",
            self.seq,
            max_bytes=cfg.spool.max_bytes,
            thin_keep_every=cfg.spool.thin_keep_every,
        )
        self.timebase = TimeBase(self.clock)
        self.encoder = Encoder(
            self.identity, self.seq, self.timebase, position_encoding=cfg.spool.encoding
        )
        self.core = PipelineCore(
            self.encoder,
            build_detector(cfg),
            build_reporter(cfg),
            self.timebase,
            flush_interval_s=cfg.spool.flush_interval_s,
            max_batch_records=cfg.spool.max_batch_records,
            engine=EngineSummarizer(cfg.report.engine_interval_s),
        )
        self.pipeline = PipelineThread(self.core, self._commit, self.clock.monotonic)
        self.device = DeviceStatus(self.clock.monotonic)
        self.vehicle: VehicleInfo | None = None
        self.publisher = Publisher(
            cfg.mqtt,
            self.identity,
            self.spool,
            birth=self._state_payload,
            on_command=self._on_command,
            password=_read_secret(cfg.mqtt.password_file),
        )
        self.commands = CommandProcessor(
            self,
            self.encoder,
            self.publisher.publish_now,
            self.pipeline.submit,
            self.clock.monotonic,
            self.overrides,
        )
        self.notifier = Notifier()
        watchdog_s = self.notifier.watchdog_timeout_s
        # Half the watchdog timeout, but never below 1.5 s: every loop stamps its progress at
        # least twice a second.
        self.monitor = ProgressMonitor(
            max(1.5, watchdog_s / 2) if watchdog_s else DEFAULT_STALL_AFTER_S
        )
        self.drivers: list[Component] = []
        self.obd: Any = None
        self.gnss: Any = None
        self.gpio: Any = None
        self.power_hold: Any = None
        self._stopping = threading.Event()
        self._reload_requested = threading.Event()
        self._health_due = threading.Event()
        # Set with _stopping or _reload_requested, so the main loop reacts without polling.
        self._wake = threading.Event()
        self._stall_publisher = threading.Event()
        self._stall_driver = threading.Event()
        self._errors_at_apply = 0
        self._build_drivers()
        self._watch_stages()

    # -- composition ---------------------------------------------------------------------------

    def _build_drivers(self) -> None:
        cfg = self.cfg
        if cfg.ignition.backend != "none":
            self._build_gpio()
        if cfg.obd.enabled:
            from drivers.obd import OBDReader

            self.obd = OBDReader(
                obd_settings(cfg.obd),
                self._emit,
                self.clock.monotonic,
                clock_rate=self.clock.scale if isinstance(self.clock, SystemClock) else 1.0,
            )
            self.drivers.append(self.obd)
        if cfg.gnss.enabled:
            from drivers.gnss import GNSSReceiver

            gnss = GNSSReceiver(gnss_settings(cfg.gnss), self._emit, self.clock.monotonic)
            self.gnss = gnss
            self.drivers.append(gnss)

    def _build_gpio(self) -> None:
        from drivers.errors import DriverError
        from drivers.gpio import IgnitionReader, PowerHold

        cfg = self.cfg
        try:
            self.gpio = IgnitionReader(
                gpio_settings(cfg.ignition), self._emit, self.clock.monotonic
            )
        except DriverError as exc:
            # A missing GPIO library or chip is a setup problem: say which key and what to do.
            raise ConfigError(f"{cfg.source}: key 'ignition.backend': {exc}") from None
        if cfg.ignition.power_hold_pin >= 0:
            self.power_hold = PowerHold(
                cfg.ignition.power_hold_release_s, cfg.ignition.power_hold_max_s
            )
        self.drivers.append(self.gpio)

    def _watch_stages(self) -> None:
        self.monitor.watch("pipeline", lambda: self.pipeline.last_progress)
        self.monitor.watch("publisher", lambda: self.publisher.last_progress)
        for d in self.drivers:
            if hasattr(d, "last_progress"):
                self.monitor.watch(type(d).__name__, _progress_probe(d))

    # -- data paths ----------------------------------------------------------------------------

    def _emit(self, sample: Sample) -> None:
        """Every driver sample passes here (driver threads) on its way to the pipeline."""
        if self._stall_driver.is_set():  # test hook only (see TEST_HOOKS_ENV)
            self._stall_driver_thread()
        if self.device.observe(sample):
            self._health_due.set()
            if isinstance(sample, IgnitionSample):
                self._on_ignition(sample)
        if isinstance(sample, VehicleInfo):
            self.vehicle = sample
        self.pipeline.emit(sample)

    def _on_ignition(self, sample: IgnitionSample) -> None:
        logger.info(
            "ignition %s (%s)%s",
            "on" if sample.on else "off",
            sample.source,
            "" if sample.on else ": parked, flushing",
        )
        if self.obd is not None and sample.source == "gpio":
            # Ignition off: stop waking the ECU (and draining the battery) with requests.
            self.obd.set_ignition(sample.on)
        if not sample.on:
            self.pipeline.submit(self._flush_positions)
        self.publisher.publish_now(
            Message(self.identity.topic("state"), self._state_payload(True), Lane.STATE, True)
        )

    def _commit(self, messages: list[Message]) -> None:
        durable: list[Message] = []
        for m in messages:
            if m.lane is Lane.LIVE:
                self.publisher.publish_live(m)
                continue
            durable.append(m)
            if m.lane is Lane.EVENT:
                etype = str(m.payload.get("type", ""))
                logger.info("event %s", etype, extra={"event_type": etype})
                if etype in ("ignition_on", "ignition_off"):
                    self._ignition_event(m, etype == "ignition_on")
        self.spool.put(durable)
        if durable:
            self.publisher.wake()

    def _ignition_event(self, m: Message, on: bool) -> None:
        # Without a GPIO line the detectors infer ignition from RPM or voltage; that is the
        # only place the parked state can come from then.
        data = m.payload.get("data", {})
        source = str(data.get("source", "")) if isinstance(data, dict) else ""
        if source == "gpio" or self.gpio is not None:
            return
        sample = IgnitionSample(self.clock.monotonic(), on, source or "fallback")
        if self.device.observe(sample):
            self._health_due.set()
            self._on_ignition(sample)

    def _flush_positions(self) -> None:
        self._commit(self.core.flush())

    def _on_command(self, name: str, payload: bytes) -> None:
        if self._stall_publisher.is_set():  # test hook only (see TEST_HOOKS_ENV)
            self._stall_publisher.clear()
            logger.warning("test hook: stalling the publisher thread")
            self._stopping.wait(120.0)
            return
        self.commands.on_command(name, payload)

    def _state_payload(self, online: bool) -> dict[str, Any]:
        ts, source = self.timebase.utc(self.clock.monotonic())
        payload: dict[str, Any] = {
            "schema": "state/1",
            "device_id": self.identity.device_id,
            "boot_id": self.identity.boot_id,
            "seq": self.seq.last_value,
            "ts": iso(ts),
            "time_source": str(source),
            "online": online,
            "version": __version__,
            "config_hash": self.cfg.digest(),
        }
        parked = self.device.parked
        if parked is not None:
            payload["parked"] = parked
        if self.vehicle is not None:
            payload.update(
                vin=self.vehicle.vin,
                adapter=self.vehicle.adapter,
                protocol=self.vehicle.protocol,
                supported_pids=list(self.vehicle.supported_pids),
            )
        return payload

    # -- CommandHost (all on the pipeline thread) ----------------------------------------------

    @property
    def config(self) -> Config:
        return self.cfg

    def apply_config(self, cfg: Config) -> None:
        """Swap in what can change live; build first so a failure changes nothing."""
        old = self.cfg
        detector = build_detector(cfg) if cfg.detect != old.detect else None
        reporter = (
            build_reporter(cfg)
            if (cfg.report, cfg.detect.motion, cfg.detect.ignition)
            != (old.report, old.detect.motion, old.detect.ignition)
            else None
        )
        if detector is not None:
            # Detector state restarts: an open trip or idle episode is not carried over.
            self.core.detector = detector
        if reporter is not None:
            self.core.reporter = reporter
        if cfg.report.engine_interval_s != old.report.engine_interval_s:
            # The open window keeps its readings; only where it closes changes.
            self.core.engine.interval_s = cfg.report.engine_interval_s
        self.core.flush_interval_s = cfg.spool.flush_interval_s
        self.core.max_batch_records = cfg.spool.max_batch_records
        self.cfg = cfg
        self._errors_at_apply = self.pipeline.errors
        self._health_due.set()
        logger.info("configuration %s applied (was %s)", cfg.digest(), old.digest())

    def health_problem(self) -> str:
        stalled = self.monitor.stalled()
        if stalled:
            return f"stalled: {', '.join(stalled)}"
        errors = self.pipeline.errors - self._errors_at_apply
        if errors:
            return f"{errors} pipeline errors"
        return ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "config_hash": self.cfg.digest(),
            "mqtt_connected": self.publisher.connected,
            "spool_depth": self.spool.depth(),
        }
        if self.device.parked is not None:
            out["parked"] = self.device.parked
        return out

    def locate(self) -> dict[str, Any] | None:
        fix = self.device.fix
        if fix is None:
            return None
        # Not a durable record: it must not use up a seq (that would be a gap backends see).
        record = self.encoder.position_record(
            position_from_fix(fix, ReportReason.FIRST), seq=self.seq.last_value
        )
        record.pop("reason", None)
        payload = dict(record)
        payload.update(
            schema="live/1",
            device_id=self.identity.device_id,
            boot_id=self.identity.boot_id,
            time_source=record.get("time_source", "gnss"),
        )
        self.publisher.publish_live(Message(self.identity.topic("live"), payload, Lane.LIVE, True))
        age = self.device.fix_age_s()
        return {**record, "fix_age_s": None if age is None else round(age, 1)}

    def flush(self) -> dict[str, Any]:
        messages = self.core.flush()
        self._commit(messages)
        return {"committed_batches": len(messages), "spool_depth": self.spool.depth()}

    def read_dtc(self) -> dict[str, Any]:
        if not self.cfg.obd.enabled:
            raise CommandError("OBD is disabled in the configuration (obd.enabled = false)")
        dtc = self.device.dtc
        if dtc is None:
            raise CommandError(
                "no trouble-code read yet (the adapter reads every"
                f" {self.cfg.obd.dtc_interval_s:.0f} s while the ignition is on)"
            )
        return {
            "stored": list(dtc.stored),
            "pending": list(dtc.pending),
            "read_age_s": round(max(0.0, self.clock.monotonic() - dtc.ts_mono), 1),
        }

    # -- health and status ---------------------------------------------------------------------

    def _stats(self) -> tuple[dict[str, Any], dict[str, Any]]:
        spool_stats = getattr(self.spool, "stats", None)
        spool: dict[str, Any] = (
            dict(spool_stats()) if callable(spool_stats) else {"depth": self.spool.depth()}
        )
        for key, value in spool.items():
            if isinstance(value, float) and value.is_integer() and key != "oldest_age_s":
                spool[key] = int(value)
        pub_stats = getattr(self.publisher, "stats", None)
        mqtt: dict[str, Any] = (
            dict(pub_stats())
            if callable(pub_stats)
            else {
                "connected": self.publisher.connected,
                "last_error": self.publisher.last_error,
                "reconnects": self.publisher.reconnects,
                "published": self.publisher.published,
                "acked": self.publisher.acked,
                "bytes_sent": self.publisher.bytes_sent,
            }
        )
        return spool, mqtt

    def _device_fields(self) -> dict[str, Any]:
        """The device picture plus each driver's counters (line noise, reply errors, reconnects)."""
        fields = self.device.fields()
        for name, driver in (("gnss", self.gnss), ("obd", self.obd)):
            if driver is not None:
                fields.setdefault(name, {})["counters"] = dict(driver.stats())
        return fields

    def _common_fields(self) -> dict[str, Any]:
        spool, mqtt = self._stats()
        return {
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "config_hash": self.cfg.digest(),
            "spool": spool,
            "mqtt": mqtt,
            **self._device_fields(),
            "pipeline": {
                "samples": self.core.samples_seen,
                "events": self.core.events_seen,
                "pending_positions": self.core.pending_positions,
                "dropped_samples": self.pipeline.dropped_samples,
                "errors": self.pipeline.errors,
            },
            "commands": {
                "received": self.commands.received,
                "rejected": self.commands.rejected,
                "dropped": self.commands.dropped,
            },
        }

    def _queue_health(self) -> None:
        """Collect on this thread (subprocess, /proc), encode and commit on the pipeline."""
        body = self._common_fields()
        body["versions"] = versions()
        body["host"] = system_fields(self.state_dir)
        body["stages"] = {r.name: round(r.age_s, 1) for r in self.monitor.check()}

        def commit() -> None:
            payload = self.encoder.envelope("health", self.clock.monotonic())
            payload.update(body)
            self._commit([Message(self.identity.topic("health"), payload, Lane.HEALTH)])

        self.pipeline.submit(commit)

    def _write_status(self, path: Path, state: str) -> None:
        doc = self._common_fields()
        doc.update(
            state=state,
            version=__version__,
            pid=os.getpid(),
            device_id=self.identity.device_id,
            written_unix=time.time(),
            stages={r.name: {"age_s": round(r.age_s, 1), "ok": r.ok} for r in self.monitor.check()},
        )
        try:
            write_status(path, doc)
        except OSError as exc:
            logger.debug("cannot write %s: %s", path, exc)

    def _status_line(self) -> str:
        fix_age = self.device.fix_age_s()
        fix = "no fix" if fix_age is None else f"fix {fix_age:.0f} s ago"
        if self.device.fix is not None and self.device.fix.sats is not None:
            fix += f" ({self.device.fix.sats} sats)"
        broker = "up" if self.publisher.connected else "down"
        parked = {None: "", True: "; parked", False: "; driving"}[self.device.parked]
        return f"{fix}; spool {self.spool.depth()}; broker {broker}{parked}"

    def _drive_outputs(self) -> None:
        if self.gpio is None:
            return
        from drivers.gpio import LEDPattern

        if self.power_hold is not None:
            ign = self.device.ignition
            flushed = self.spool.depth() == 0 and self.core.pending_positions == 0
            self.gpio.power_hold = self.power_hold.update(
                time.monotonic(), None if ign is None else ign.on, flushed
            )
        fix_age = self.device.fix_age_s()
        if not self.publisher.connected:
            self.gpio.led_pattern = LEDPattern.NO_BROKER
        elif fix_age is None or fix_age > FIX_FRESH_S:
            self.gpio.led_pattern = LEDPattern.NO_FIX
        else:
            self.gpio.led_pattern = LEDPattern.ALL_GOOD

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        # Dependency order: spool (opened in __init__) -> publisher -> pipeline -> drivers.
        self.publisher.start()
        self.pipeline.start()
        for d in self.drivers:
            d.start()
        logger.info(
            "started: device %s, broker %s:%d, config %s",
            self.identity.device_id,
            self.cfg.mqtt.host,
            self.cfg.mqtt.port,
            self.cfg.digest(),
        )

    def stop(self) -> None:
        """Reverse order: drivers, pipeline (flushes positions to the spool), publisher."""
        deadline = time.monotonic() + STOP_BUDGET_S
        for i, d in enumerate(reversed(self.drivers)):
            # Keep 3 s for the pipeline flush and the publisher's offline state.
            left = deadline - time.monotonic() - 3.0
            d.stop(timeout_s=max(0.1, min(1.0, left / (len(self.drivers) - i))))
        self.pipeline.stop(timeout_s=max(0.1, min(1.0, deadline - time.monotonic() - 2.0)))
        self.publisher.stop(timeout_s=max(0.1, deadline - time.monotonic()))
        self.spool.close()
        logger.info("stopped")

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def reload(self) -> bool:
        """SIGHUP: re-read the file; keep the running configuration when it is bad."""
        source = self.cfg.source
        if self.commands.pending:
            # Reloading now would mix the file with a remote change still being confirmed.
            logger.warning("reload refused: a remote configuration change is being confirmed")
            return False
        try:
            new = self.overrides.apply(load(source), startup=False)
        except ConfigError as exc:
            logger.warning("reload refused, keeping the running configuration: %s", exc)
            return False
        old = self.cfg
        restart = [
            name
            for name in ("agent", "device", "mqtt", "gnss", "obd", "ignition")
            if getattr(new, name) != getattr(old, name)
        ]
        if (new.spool.max_bytes, new.spool.encoding) != (old.spool.max_bytes, old.spool.encoding):
            restart.append("spool.max_bytes/encoding")
        if restart:
            logger.warning(
                "reload: changes to %s take effect only after a restart", ", ".join(restart)
            )
        done = threading.Event()
        failure: list[str] = []

        def apply() -> None:
            try:
                # Only the live-appliable parts; the rest waits for the restart.
                live = _with_live_parts(old, new)
                self.apply_config(live)
            except Exception as exc:
                failure.append(str(exc))
            finally:
                done.set()

        self.pipeline.submit(apply)
        deadline = time.monotonic() + 5.0
        while not done.wait(0.1):
            # A stop request must not wait behind a busy (or stalled) pipeline.
            if self._stopping.is_set() or time.monotonic() > deadline:
                logger.warning("reload: the pipeline did not apply the configuration in time")
                return False
        if failure:
            logger.warning("reload refused, keeping the running configuration: %s", failure[0])
            return False
        logger.info("reloaded %s", source)
        return True

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        from agent import logsetup

        logsetup.configure(self.cfg.agent.log_level, self.identity.device_id)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
            self.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self._reload_requested.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_hup)
        if os.environ.get(TEST_HOOKS_ENV) == "1":
            signal.signal(signal.SIGUSR2, lambda s, f: self._stall_pipeline())
            signal.signal(signal.SIGUSR1, lambda s, f: self._stall_publisher.set())
            signal.signal(signal.SIGRTMIN, lambda s, f: self._stall_driver.set())
            logger.warning(
                "test hooks enabled (%s=1): SIGUSR2 stalls the pipeline, SIGUSR1 the publisher,"
                " SIGRTMIN a driver",
                TEST_HOOKS_ENV,
            )
        self.start()
        status_file = status_path(self.state_dir)
        self._write_status(status_file, "running")
        link_status_file(self.state_dir, status_file)
        self.notifier.ready(self._status_line())
        self._loop(status_file)
        self.notifier.stopping()
        started = time.monotonic()
        self.stop()
        self._write_status(status_file, "stopped")
        logger.debug("shutdown took %.2f s", time.monotonic() - started)
        return 0

    def _loop(self, status_file: Path) -> None:
        watchdog_every = self.notifier.watchdog_interval_s
        next_watchdog = time.monotonic()
        next_status = time.monotonic() + STATUS_EVERY_S
        next_health = time.monotonic() + 5.0  # a first record soon after start
        next_tick = time.monotonic() + 1.0
        was_connected = False
        warned_stall = False
        last_health = float("-inf")
        period = LOOP_S if watchdog_every is None else min(LOOP_S, watchdog_every)
        while True:
            self._wake.wait(period)
            self._wake.clear()
            if self._stopping.is_set():
                break
            now = time.monotonic()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload()
            if watchdog_every is not None and now >= next_watchdog:
                stalled = self.monitor.stalled()
                if not stalled:
                    self.notifier.watchdog()
                    warned_stall = False
                    next_watchdog = now + watchdog_every
                elif not warned_stall:
                    # No ping: systemd restarts us when WatchdogSec runs out.
                    logger.error("stage(s) stalled: %s; withholding the watchdog", stalled)
                    warned_stall = True
            if self.publisher.connected != was_connected:
                was_connected = self.publisher.connected
                self._health_due.set()
            # On a change at most every HEALTH_MIN_GAP_S, so a flapping link cannot flood.
            changed = self._health_due.is_set() and now - last_health >= HEALTH_MIN_GAP_S
            if changed or now >= next_health:
                self._health_due.clear()
                self._queue_health()
                last_health = now
                next_health = now + self.cfg.health.interval_s
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                self._write_status(status_file, "running")
                self.notifier.status(self._status_line())
            if now >= next_tick:
                next_tick = now + 1.0
                if self.commands.pending:
                    self.pipeline.submit(self.commands.tick)
            self._drive_outputs()

    def _stall_driver_thread(self) -> None:
        """Hang the calling driver thread while a remote configuration change is pending."""
        self._stall_driver.clear()
        logger.warning(
            "test hook: stalling the %s thread until the configuration change is settled",
            threading.current_thread().name,
        )
        deadline = time.monotonic() + 120.0
        # Wakes on shutdown too, so even a stalled agent still stops within its budget.
        while self.commands.pending and time.monotonic() < deadline:
            if self._stopping.wait(0.1):
                return

    def _stall_pipeline(self) -> None:
        logger.warning("test hook: stalling the pipeline thread")

        def stall() -> None:
            # Wakes on shutdown, so even a stalled agent still stops within its budget.
            self._stopping.wait(120.0)

        self.pipeline.submit(stall)


def _progress_probe(component: Any) -> Callable[[], float]:
    return lambda: float(component.last_progress)


def _with_live_parts(old: Config, new: Config) -> Config:
    """``old`` with the parts of ``new`` that can change without a restart."""
    import dataclasses

    spool = dataclasses.replace(
        old.spool,
        flush_interval_s=new.spool.flush_interval_s,
        max_batch_records=new.spool.max_batch_records,
    )
    return dataclasses.replace(
        old, report=new.report, detect=new.detect, health=new.health, spool=spool
    )


def _read_secret(path: str) -> str | None:
    if not path:
        return None
    return Path(path).read_text().strip()
