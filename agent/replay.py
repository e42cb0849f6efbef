"""Replay: `telematics-agent replay`, the whole pipeline over a capture in virtual time.

A capture (JSON lines, written by ``telematics-sim record`` or recorded from a van) holds raw
device traffic with timestamps. Replay feeds the GNSS bytes to the same ``GNSSStream``, the OBD
request/reply pairs to the same ``OBDReplayDecoder`` and the ignition levels to the same
``IgnitionDebouncer`` the live drivers use, and their samples, in order, to the same
``PipelineCore`` the daemon runs. Time is the capture's: nothing waits, nothing reads a clock.
Every message the daemon would publish is written as one JSON line ``{"topic", "payload"}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import config as config_mod
from agent.clock import VirtualClock
from agent.config import Config
from agent.detectors import DetectorChain, build_detectors
from agent.driverconfig import obd_settings
from agent.encoder import Encoder, Identity, Message
from agent.engine import EngineSummarizer
from agent.errors import AgentError, ConfigError
from agent.geofence import GeofenceError, GeofenceSet, configured_geofences
from agent.pipeline import PipelineCore
from agent.reporter import PositionReporter
from agent.sequence import SequenceCounter
from agent.timebase import TimeBase
from drivers.gnss import GNSSStream
from drivers.ignition import IgnitionDebouncer
from drivers.obd import OBDReplayDecoder
from drivers.samples import Sample

logger = logging.getLogger(__name__)


class CaptureError(AgentError, ValueError):
    """The capture file is missing, unreadable, or not a capture at all."""


@dataclass(slots=True)
class ReplayStats:
    records: int = 0
    samples: int = 0
    messages: int = 0
    duration_s: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class CaptureHeader:
    scenario: str
    start_utc: dt.datetime
    gnss_hz: float
    elm_variant: str


def read_header(line: str, source: str) -> CaptureHeader:
    try:
        head = json.loads(line)
    except json.JSONDecodeError:
        raise CaptureError(f"{source}: line 1 is not JSON; not a capture file") from None
    if not isinstance(head, dict) or head.get("capture") != 1:
        raise CaptureError(f"{source}: line 1 is not a version 1 capture header")
    try:
        start = dt.datetime.fromisoformat(str(head.get("start_utc", "")).replace("Z", "+00:00"))
    except ValueError:
        raise CaptureError(f"{source}: header start_utc is not an ISO 8601 time") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    hz = head.get("gnss_hz", 1)
    return CaptureHeader(
        str(head.get("scenario", "")),
        start,
        float(hz) if isinstance(hz, (int, float)) and not isinstance(hz, bool) else 1.0,
        str(head.get("elm_variant", "")),
    )


class Replayer:
    """Device decoders plus the pipeline core, driven by capture records in time order."""

    def __init__(
        self,
        cfg: Config,
        header: CaptureHeader,
        seq_path: Path,
        geofences: GeofenceSet,
    ) -> None:
        self.cfg = cfg
        self.stats = ReplayStats()
        self.clock = VirtualClock(0.0, header.start_utc)
        self.gnss = GNSSStream(
            cfg.gnss.checksum_policy,
            cfg.gnss.missing_checksum,
            silence_timeout_s=cfg.gnss.silence_timeout_s,
        )
        self.obd = OBDReplayDecoder(
            obd_settings(cfg.obd)
        )
        self.ignition = IgnitionDebouncer(cfg.ignition.debounce_s, active_low=False)
        self.detector: DetectorChain = build_detectors(cfg, geofences)
        timebase = TimeBase(self.clock)
        identity = Identity(cfg.device.id, "replay", cfg.mqtt.prefix)
        self.core = PipelineCore(
            Encoder(
                identity, SequenceCounter(seq_path), timebase,
                position_encoding=cfg.spool.encoding,
            ),
            self.detector,
            PositionReporter(cfg.report, cfg.detect.motion, cfg.detect.ignition),
            timebase,
            flush_interval_s=cfg.spool.flush_interval_s,
            max_batch_records=cfg.spool.max_batch_records,
            engine=EngineSummarizer(cfg.report.engine_interval_s),
        )
        self._now = 0.0

    def feed(self, rec: Any) -> list[Message]:
        """One capture record (a decoded JSON object); bad records are counted and skipped."""
        self.stats.records += 1
        if not isinstance(rec, dict):
            return self._skip("not_an_object")
        t = rec.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
            return self._skip("bad_time")
        t = float(t)
        if t < self._now - 1e-6:
            return self._skip("time_backwards")
        out = self._advance(t)
        dev, samples = rec.get("dev"), []
        if "link" in rec:
            samples = self._link(dev, rec.get("link"), t)
        elif dev == "gnss" and isinstance(rec.get("data"), str):
            samples = self.gnss.feed(rec["data"].encode("latin-1", "replace"), t)
        elif dev == "obd" and isinstance(rec.get("req"), str) and isinstance(rec.get("reply"), str):
            samples = self.obd.feed(t, rec["req"], rec["reply"])
        elif dev == "ign" and rec.get("level") in (0, 1):
            samples = list(self.ignition.feed(int(rec["level"]), t))
        else:
            return out + self._skip(f"bad_record_{dev if isinstance(dev, str) else 'dev'}")
        return out + self._handle(samples)

    def finish(self) -> list[Message]:
        """End of capture: let pending confirmations and evidence out, flush positions."""
        out = self._advance(self._now + 1e-3)
        tail = self.core.finish(self._now)
        self.stats.duration_s = self._now
        return out + self._count(tail)

    def _advance(self, t: float) -> list[Message]:
        self._now = max(self._now, t)
        self.clock.advance_to(t)
        samples = list(self.gnss.tick(t)) + list(self.ignition.tick(t))
        return self._handle(samples) + self._count(self.core.tick(t))

    def _link(self, dev: Any, what: Any, t: float) -> list[Sample]:
        if dev == "gnss" and what == "unplug":
            return self.gnss.device_lost(t, "receiver unplugged")
        if dev == "gnss" and what == "replug":
            return self.gnss.device_back(t)
        if dev == "obd" and what in ("unplug", "replug"):
            return self.obd.link(t, str(what))
        self.stats.skipped["bad_link_record"] += 1
        return []

    def _handle(self, samples: Iterable[Sample]) -> list[Message]:
        out: list[Message] = []
        for s in samples:
            self.stats.samples += 1
            out += self.core.handle(s)
        return self._count(out)

    def _count(self, msgs: list[Message]) -> list[Message]:
        self.stats.messages += len(msgs)
        return msgs

    def _skip(self, why: str) -> list[Message]:
        self.stats.skipped[why] += 1
        return []


def replay_lines(
    lines: Iterable[str],
    cfg: Config,
    *,
    source: str = "<capture>",
    geofences: GeofenceSet | None = None,
) -> Iterator[Message]:
    """Every message of a capture given as lines of text; ``CaptureError`` for a bad header.

    Geofences default to the file ``cfg.detect.geofences_file`` names (``GeofenceError`` if it
    is bad), read here: replay is its own composition root.
    """
    if geofences is None:
        geofences = configured_geofences(cfg.detect.geofences_file)
    it = iter(lines)
    first = next(it, None)
    if first is None:
        raise CaptureError(f"{source}: empty file; not a capture")
    header = read_header(first, source)
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        rep = Replayer(cfg, header, Path(tmp) / "seq", geofences)
        for lineno, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rep.stats.skipped["bad_json"] += 1
                logger.debug("%s:%d: not JSON, skipped", source, lineno)
                continue
            yield from rep.feed(rec)
        yield from rep.finish()
        if rep.stats.skipped:
            logger.warning(
                "%s: skipped %s",
                source,
                ", ".join(f"{k}={v}" for k, v in sorted(rep.stats.skipped.items())),
            )


def replay_file(capture: Path, cfg: Config, out: Path) -> ReplayStats:
    """Replay ``capture`` and write its messages to ``out`` as JSON lines."""
    stats = ReplayStats()
    try:
        fin = capture.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CaptureError(f"{capture}: cannot read the capture ({exc.strerror})") from None
    with fin, out.open("w", encoding="utf-8") as fout:
        for msg in replay_lines(fin, cfg, source=str(capture)):
            fout.write(json.dumps({"topic": msg.topic, "payload": msg.payload}, default=str) + "\n")
            stats.messages += 1
    return stats


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "replay",
        help="run the pipeline over a recorded capture in virtual time",
        description="Run detectors and reporting over a capture as fast as possible and write "
        "every message that would be published as JSON lines {topic, payload}.",
    )
    p.add_argument("capture", help="capture file (JSON lines, from telematics-sim record)")
    p.add_argument("--config", required=True, help="configuration file (TOML)")
    p.add_argument("--out", required=True, help="output file for the messages (JSON lines)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.process_time()
    try:
        stats = replay_file(Path(args.capture), cfg, Path(args.out))
    except (CaptureError, GeofenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.out}: cannot write ({exc.strerror})", file=sys.stderr)
        return 1
    logger.info(
        "replayed %s: %d messages in %.2f CPU s",
        args.capture,
        stats.messages,
        time.process_time() - started,
    )
    return 0
