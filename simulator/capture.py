"""Capture: a simulated drive written as raw device traffic with timestamps, as fast as it can.

JSON lines; line 1 is a header, then records in time order (documented in docs/simulator.md):
``{"t": s, "dev": "gnss", "data": "<receiver bytes, latin-1>"}``,
``{"t": s, "dev": "obd", "req": "010D0C", "reply": "<ELM327 reply incl. prompt>"}``,
``{"t": s, "dev": "ign", "level": 0|1}``,
``{"t": s, "dev": "gnss"|"obd", "link": "unplug"|"replug"}``.
The receiver bytes are exactly what ``telematics-sim run`` writes to the pseudo-terminal for the
same scenario, seed, rate and talker (the same ``Receiver``), only not paced by a clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from simulator.elm327 import ELM327
from simulator.model import DT_S, VehicleModel
from simulator.nmea import Talker
from simulator.scenario import Interval
from simulator.talker import Receiver
from simulator.truth import runs

CAPTURE_VERSION = 1
# What python-obd sends when it connects (ATZ, ATE0, ATH1, ATL0): replies in the capture are
# formatted with these settings (no echo, CAN headers on, no linefeeds, spaces on).
ELM_INIT = ("ATZ", "ATE0", "ATH1", "ATL0")
CONNECT_REQUESTS = ("ATRV", "0100", "0120", "0140", "0160", "0180", "01A0", "0902", "03", "07")
# (period_s, request) while the ignition is on: the agent's default poll plan.
POLL_PLAN = (
    (0.5, "010D0C"),
    (1.0, "01045E100B0F"),
    (10.0, "01052F1F31A6"),
    (60.0, "03"),
    (60.0, "07"),
)
BATTERY_PERIOD_S = 30.0
_PRIORITY = {"link": 0, "ign": 1, "gnss": 2, "obd": 3}


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    path: Path
    records: int
    gnss_records: int
    obd_records: int
    duration_s: float


def single_pid_requests(request: str) -> list[str]:
    """A multi-PID mode 01 request split into one request per PID (for adapters without it)."""
    if not request.startswith("01") or len(request) <= 4:
        return [request]
    return [f"01{request[i : i + 2]}" for i in range(2, len(request), 2)]


def _intervals_cover(t_s: float, intervals: tuple[Interval, ...]) -> bool:
    return any(i.t_s <= t_s < i.end_s for i in intervals)


class CaptureWriter:
    """Builds the records of one drive: each device stream in time order, then merged."""

    def __init__(
        self,
        model: VehicleModel,
        seed: int,
        gnss_hz: float = 1.0,
        talker: Talker = Talker.GP,
        elm_variant: str = "v1.5",
    ) -> None:
        self.model = model
        self.seed = seed
        self.gnss_hz = gnss_hz
        self.talker = talker
        self.elm_variant = elm_variant
        self.receiver = Receiver(model.scenario.gnss, talker, gnss_hz, seed)
        self.elm = ELM327(elm_variant, latency_s=0.0)

    def header(self) -> dict[str, Any]:
        scenario = self.model.scenario
        return {
            "capture": CAPTURE_VERSION,
            "scenario": scenario.name,
            "start_utc": scenario.start_utc.isoformat().replace("+00:00", "Z"),
            "gnss_hz": self.gnss_hz,
            "elm_variant": self.elm_variant,
            "talker": self.talker.value,
            "seed": self.seed,
            "duration_s": round(self.model.duration_s, 1),
            "elm_init": list(ELM_INIT),
        }

    def records(self) -> list[dict[str, Any]]:
        merged = [*self._gnss(), *self._obd(), *self._ignition(), *self._links()]
        merged.sort(key=lambda r: (r["t"], _PRIORITY["link" if "link" in r else r["dev"]]))
        return merged

    def _gnss(self) -> Iterator[dict[str, Any]]:
        period = 1.0 / self.gnss_hz
        n = 0
        while n * period <= self.model.duration_s + 1e-9:
            t = round(n * period, 3)
            state = self.model.state_at(t)
            data = self.receiver.epoch_bytes(state)
            if state.gnss_online:
                yield {"t": t, "dev": "gnss", "data": data.decode("latin-1")}
            n += 1

    def _connect(self) -> None:
        self.elm.reset()
        state = self.model.state_at(0.0)
        for command in ELM_INIT:
            self.elm.handle(command, state)

    def _obd(self) -> Iterator[dict[str, Any]]:
        model = self.model
        unplugged = model.scenario.obd_unplug
        multi = self.elm.variant.multi_pid
        self._connect()
        ignition_on_ticks = {
            k for k in range(1, model.n) if model.ignition[k] and not model.ignition[k - 1]
        }
        replug_ticks = {model.index_at(i.end_s) for i in unplugged if i.end_s <= model.duration_s}
        step = round(0.5 / DT_S)  # the poll plan's finest period, in model samples
        for k in range(0, model.n):
            t = round(k * DT_S, 3)
            if _intervals_cover(t, unplugged):
                continue
            requests: list[str] = []
            if k == 0 or k in ignition_on_ticks or k in replug_ticks:
                if k in replug_ticks:
                    self._connect()  # a replugged adapter powers up fresh; the agent re-inits
                requests.extend(CONNECT_REQUESTS)
            elif k % step == 0:
                if model.ignition[k]:
                    for period_s, request in POLL_PLAN:
                        if k % round(period_s / DT_S) == 0:
                            requests.append(request)
                if k % round(BATTERY_PERIOD_S / DT_S) == 0:
                    requests.append("ATRV")
            if not requests:
                continue
            state = model.state_at(t)
            for request in requests:
                for sent in [request] if multi else single_pid_requests(request):
                    yield {"t": t, "dev": "obd", "req": sent, "reply": self.elm.handle(sent, state)}

    def _ignition(self) -> Iterator[dict[str, Any]]:
        ignition = self.model.ignition
        yield {"t": 0.0, "dev": "ign", "level": int(ignition[0])}
        for k in range(1, self.model.n):
            if ignition[k] != ignition[k - 1]:
                yield {"t": round(k * DT_S, 3), "dev": "ign", "level": int(ignition[k])}

    def _links(self) -> Iterator[dict[str, Any]]:
        scenario = self.model.scenario
        for dev, intervals in (("gnss", scenario.gnss.unplug), ("obd", scenario.obd_unplug)):
            down = [_intervals_cover(k * DT_S, intervals) for k in range(self.model.n)]
            for start, end in runs(down):
                yield {"t": round(start * DT_S, 3), "dev": dev, "link": "unplug"}
                if end < self.model.n:
                    yield {"t": round(end * DT_S, 3), "dev": dev, "link": "replug"}


def write_capture(writer: CaptureWriter, out: TextIO) -> tuple[int, int, int]:
    """Write header and records; returns (records, gnss records, obd records)."""
    out.write(json.dumps(writer.header(), separators=(",", ":")) + "\n")
    total = gnss = obd = 0
    for record in writer.records():
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        total += 1
        if "link" not in record:
            gnss += record["dev"] == "gnss"
            obd += record["dev"] == "obd"
    return total, gnss, obd


def record_capture(
    model: VehicleModel,
    path: str | Path,
    seed: int,
    gnss_hz: float = 1.0,
    talker: Talker = Talker.GP,
    elm_variant: str = "v1.5",
) -> CaptureSummary:
    """Write the drive as a capture file at ``path`` (atomically: temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = CaptureWriter(model, seed, gnss_hz, talker, elm_variant)
    with tmp.open("w", encoding="utf-8") as out:
        total, gnss, obd = write_capture(writer, out)
    tmp.replace(path)
    return CaptureSummary(path, total, gnss, obd, model.duration_s)
