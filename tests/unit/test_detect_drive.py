"""A hand-built van for detector tests: a kinematic timeline sampled like the real drivers.

Other detector tests import :class:`Drive`; the tests here check the builder itself.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from agent.config import Config, from_dict
from agent.detectors import build_detectors
from agent.events import Event, EventType
from agent.geofence import GeofenceSet, distance_m
from drivers.samples import FixMode, FixQuality, GNSSFix, IgnitionSample, OBDReading, Sample

T0_UTC = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
M_PER_DEG = 111_195.0


@dataclass
class _State:
    t: float
    lat: float
    lon: float
    speed_mps: float
    course_deg: float
    ignition: bool


@dataclass
class Drive:
    """Script a drive with ``park``/``cruise``/``accel``/``turn``, then take ``samples()``."""

    gnss_hz: float = 1.0
    obd_hz: float = 2.0
    obd: bool = True
    gnss: bool = True
    hdop: float = 0.9
    noise_m: float = 0.0
    seed: int = 0
    lat0: float = 52.5
    lon0: float = 13.4
    step_s: float = 0.05
    round_obd: bool = True  # the ECU reports whole km/h
    states: list[_State] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.states.append(_State(0.0, self.lat0, self.lon0, 0.0, 90.0, False))

    @property
    def now(self) -> float:
        return self.states[-1].t

    def ignition(self, on: bool) -> Drive:
        s = self.states[-1]
        self.states[-1] = _State(s.t, s.lat, s.lon, s.speed_mps, s.course_deg, on)
        return self

    def _run(self, duration_s: float, accel_mps2: float = 0.0, yaw_dps: float = 0.0) -> Drive:
        steps = max(1, round(duration_s / self.step_s))
        for _ in range(steps):
            s = self.states[-1]
            dt_s = self.step_s
            v = max(0.0, s.speed_mps + accel_mps2 * dt_s)
            course = (s.course_deg + yaw_dps * dt_s) % 360.0
            d = (s.speed_mps + v) / 2 * dt_s
            lat = s.lat + d * math.cos(math.radians(course)) / M_PER_DEG
            lon = s.lon + d * math.sin(math.radians(course)) / (
                M_PER_DEG * math.cos(math.radians(s.lat))
            )
            self.states.append(_State(s.t + dt_s, lat, lon, v, course, s.ignition))
        return self

    def park(self, duration_s: float) -> Drive:
        return self._run(duration_s)

    def cruise(self, duration_s: float) -> Drive:
        return self._run(duration_s)

    def accel(self, duration_s: float, accel_mps2: float) -> Drive:
        return self._run(duration_s, accel_mps2=accel_mps2)

    def to_speed(self, speed_kmh: float, accel_mps2: float = 1.2) -> Drive:
        dv = speed_kmh / 3.6 - self.states[-1].speed_mps
        if abs(dv) < 1e-9:
            return self
        a = abs(accel_mps2) if dv > 0 else -abs(accel_mps2)
        return self._run(dv / a, accel_mps2=a)

    def turn(self, duration_s: float, yaw_dps: float) -> Drive:
        return self._run(duration_s, yaw_dps=yaw_dps)

    def _at(self, t: float) -> _State:
        i = min(len(self.states) - 1, max(0, round(t / self.step_s)))
        return self.states[i]

    def samples(self) -> list[Sample]:
        rng = random.Random(self.seed)
        out: list[tuple[float, int, Sample]] = []
        end = self.now
        last_ign: bool | None = None
        for s in self.states:
            if s.ignition != last_ign:
                out.append((s.t, 0, IgnitionSample(s.t, s.ignition)))
                last_ign = s.ignition
        if self.obd:
            k = 0
            while k / self.obd_hz <= end:
                t = k / self.obd_hz
                s = self._at(t)
                if s.ignition:
                    v = s.speed_mps * 3.6
                    out.append(
                        (
                            t,
                            1,
                            OBDReading(
                                t,
                                speed_kmh=float(round(v)) if self.round_obd else v,
                                rpm=800.0 + 30.0 * v,
                                fuel_rate_lph=1.0 + 0.08 * v,
                            ),
                        )
                    )
                k += 1
        if self.gnss:
            k = 0
            while k / self.gnss_hz <= end:
                t = k / self.gnss_hz
                s = self._at(t)
                dn = rng.gauss(0, self.noise_m) if self.noise_m else 0.0
                de = rng.gauss(0, self.noise_m) if self.noise_m else 0.0
                out.append(
                    (
                        t,
                        2,
                        GNSSFix(
                            ts_mono=t,
                            utc=T0_UTC + dt.timedelta(seconds=t),
                            lat=s.lat + dn / M_PER_DEG,
                            lon=s.lon + de / (M_PER_DEG * math.cos(math.radians(s.lat))),
                            alt_m=40.0,
                            speed_mps=s.speed_mps,
                            course_deg=s.course_deg,
                            mode=FixMode.FIX_3D,
                            quality=FixQuality.GPS,
                            sats=9,
                            hdop=self.hdop,
                        ),
                    )
                )
                k += 1
        out.sort(key=lambda x: (x[0], x[1]))
        return [s for _, _, s in out]


def config(**detect: object) -> Config:
    """A config with ``detect`` overrides given as nested dicts: ``harsh={"accel_mps2": 2}``."""
    return from_dict({"device": {"id": "van-1"}, "detect": detect})


def run(
    samples: Sequence[Sample], cfg: Config | None = None, fences: GeofenceSet | None = None
) -> list[Event]:
    chain = build_detectors(cfg or config(), fences or GeofenceSet())
    events: list[Event] = []
    for s in samples:
        events += chain.feed(s)
    last = max((s.ts_mono for s in samples if math.isfinite(s.ts_mono)), default=0.0)
    events += chain.tick(last + 3600.0)
    events += chain.flush()
    return events


def of(events: list[Event], *types: EventType) -> list[Event]:
    return [e for e in events if e.type in types]


def delivery_round() -> Drive:
    """Ignition on, idle, drive, a delivery stop with engine off, drive, park and switch off."""
    d = Drive()
    d.park(30).ignition(True).park(150)  # idle 150 s
    d.to_speed(50).cruise(120).to_speed(0, 1.5)
    d.park(240)  # delivery stop, engine running
    d.to_speed(40).cruise(60).to_speed(0, 1.5).park(20)
    d.ignition(False).park(400)
    return d


def test_drive_moves_east_at_the_scripted_speed() -> None:
    d = Drive().ignition(True).to_speed(36.0).cruise(100)
    fixes = [s for s in d.samples() if isinstance(s, GNSSFix)]
    a, b = fixes[-101], fixes[-1]
    assert b.lon > a.lon
    assert abs(distance_m(a.lat, a.lon, b.lat, b.lon) - 1000.0) < 5.0


def test_delivery_round_gives_one_trip_with_its_stop_and_idle() -> None:
    events = run(delivery_round().samples())
    types = [e.type for e in events]
    assert types.count(EventType.TRIP_START) == 1
    assert types.count(EventType.TRIP_END) == 1
    assert types.count(EventType.IDLE_START) == 2  # before departure and at the stop
    # The standstill the agent starts in is no delivery stop: the delivery, and parked at the end.
    assert types.count(EventType.STOP_START) == 2
    end = of(events, EventType.TRIP_END)[0]
    assert 2.3 < end.data["distance_km"] < 2.8
    assert end.data["fuel_used_l"] > 0
    assert of(events, EventType.IGNITION_ON)[0].ts_mono == pytest.approx(30.0)
    assert not of(events, EventType.IGNITION_OFF)[0].ts_mono < 600
    assert not of(events, EventType.HARSH_BRAKE, EventType.HARSH_ACCEL, EventType.SPEEDING_START)
