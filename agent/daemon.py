"""Daemon: the composition root that builds, starts and stops every component."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from agent import __version__
from agent.clock import Clock, SystemClock
from agent.config import Config
from agent.encoder import Encoder, Identity, Lane, Message, read_boot_id
from agent.events import Detector
from agent.pipeline import NullDetector, PipelineCore, PipelineThread
from agent.publisher import Publisher
from agent.reporter import PositionReporter
from agent.sequence import SequenceCounter
from agent.spool import Spool
from agent.timebase import TimeBase, iso
from drivers.samples import Sample, VehicleInfo

logger = logging.getLogger(__name__)


class Component(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout_s: float = ...) -> None: ...


def build_detector(cfg: Config) -> Detector:
    """The configured detectors, or none when the detection package is not available."""
    try:
        from agent import detectors
    except ImportError:
        return NullDetector()
    build: Callable[..., Detector] = detectors.build_detectors
    return build(cfg)


class Daemon:
    """Builds components from a config, starts them in dependency order, stops them in reverse."""

    def __init__(self, cfg: Config, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock: Clock = clock or SystemClock(cfg.agent.time_scale)
        self.state_dir = Path(cfg.agent.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.identity = Identity(cfg.device.id, read_boot_id(), cfg.mqtt.prefix)
        self.seq = SequenceCounter(self.state_dir / "seq")
        self.spool = Spool(self.state_dir / "spool", self.seq)
        self.timebase = TimeBase(self.clock)
        self.encoder = Encoder(self.identity, self.seq, self.timebase)
        self.core = PipelineCore(
            self.encoder,
            build_detector(cfg),
            PositionReporter(cfg.report),
            self.timebase,
            flush_interval_s=cfg.spool.flush_interval_s,
            max_batch_records=cfg.spool.max_batch_records,
        )
        self.pipeline = PipelineThread(self.core, self._commit, self.clock.monotonic)
        self.vehicle: VehicleInfo | None = None
        self.publisher = Publisher(
            cfg.mqtt,
            self.identity,
            self.spool,
            birth=self._state_payload,
            password=_read_secret(cfg.mqtt.password_file),
        )
        self.drivers: list[Component] = []
        self._stopping = threading.Event()
        self._build_drivers()

    def _build_drivers(self) -> None:
        cfg = self.cfg
        if cfg.gnss.enabled:
            from drivers.gnss import GNSSReceiver, GNSSSettings

            gnss = GNSSReceiver(
                GNSSSettings(
                    port=cfg.gnss.port,
                    baud=cfg.gnss.baud,
                    checksum_policy=cfg.gnss.checksum_policy,
                    missing_checksum=cfg.gnss.missing_checksum,
                    silence_timeout_s=cfg.gnss.silence_timeout_s,
                    set_system_clock=cfg.gnss.set_system_clock,
                ),
                self.pipeline.emit,
                self.clock.monotonic,
            )
            self.drivers.append(gnss)

    def _emit(self, sample: Sample) -> None:
        self.pipeline.emit(sample)

    def _commit(self, messages: list[Message]) -> None:
        durable: list[Message] = []
        for m in messages:
            if m.lane is Lane.LIVE:
                self.publisher.publish_live(m)
            else:
                durable.append(m)
        self.spool.put(durable)

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
        if self.vehicle is not None:
            payload.update(
                vin=self.vehicle.vin,
                adapter=self.vehicle.adapter,
                protocol=self.vehicle.protocol,
                supported_pids=list(self.vehicle.supported_pids),
            )
        return payload

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
        for d in reversed(self.drivers):
            d.stop(timeout_s=1.0)
        self.pipeline.stop(timeout_s=1.0)
        self.publisher.stop(timeout_s=2.5)
        self.spool.close()
        logger.info("stopped")

    def request_stop(self) -> None:
        self._stopping.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
            self._stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not self._stopping.wait(1.0):
            pass
        started = time.monotonic()
        self.stop()
        logger.debug("shutdown took %.2f s", time.monotonic() - started)
        return 0


def _read_secret(path: str) -> str | None:
    if not path:
        return None
    return Path(path).read_text().strip()
