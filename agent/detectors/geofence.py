"""Geofence detector: geofence_enter / geofence_exit, confirmed over consecutive fixes."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import GeofenceDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from agent.geofence import Geofence, GeofenceSet
from drivers.samples import GNSSFix, Sample


@dataclass(slots=True)
class _FenceTrack:
    inside: bool | None = None
    streak: int = 0  # consecutive fixes on the other side
    streak_ts: float = 0.0  # the first of them
    crossed_ts: float = 0.0  # interpolated boundary crossing of the current streak
    crossed_at: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True, slots=True)
class _Point:
    """Where the van is judged to be at one fix."""

    ts_mono: float
    lat: float
    lon: float


class GeofenceDetector:
    """Enter/exit after ``confirm_fixes`` consecutive fixes on the other side, over ``confirm_s``.

    The event time is the interpolated moment the segment between the last fix on the old side
    and the first on the new side crossed the boundary. A segment whose ends are both outside but
    which passes through a fence (a small circle at speed) yields an enter and an exit.

    Only fixes that pass the motion tracker's gates count. While the van stands still it is
    where it stopped (the tracker's ``rest_at``), not where each fix puts it: a receiver parked
    by a boundary can be thrown across it by multipath for many fixes in a row, and a fleet
    manager wants one enter when the van drives in, not an exit and enter every time a lorry
    parks next to it. So a standstill holds one place: a van that comes to rest just past a
    boundary still completes its crossing, and a parked van never flips side.
    """

    def __init__(self, settings: GeofenceDetectSection, fences: GeofenceSet) -> None:
        self._s = settings
        self._fences = fences
        self._tracks = {f.id: _FenceTrack() for f in fences.fences}
        self._last: _Point | None = None

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        if not isinstance(sample, GNSSFix) or not self._fences.fences:
            return []
        # Not known to be moving, with a standstill's place: the van is there.
        rest = m.rest_at if m.stationary() is not False else None
        parked = rest is not None
        if rest is not None:
            fix = _Point(sample.ts_mono, *rest)
        elif m.fix_good:
            fix = _Point(sample.ts_mono, sample.lat, sample.lon)
        else:
            return []
        prev = self._last
        if prev is not None and fix.ts_mono <= prev.ts_mono:
            return []
        self._last = fix
        joined = prev is not None and fix.ts_mono - prev.ts_mono <= self._s.max_segment_s
        out: list[Event] = []
        for fence in self._fences.fences:
            track = self._tracks[fence.id]
            inside = fence.contains(fix.lat, fix.lon)
            if track.inside is None:
                track.inside = inside
                if inside:
                    # Inside when the agent started: reported once, at the start, as initial.
                    t0 = m.first_ts if m.first_ts is not None else fix.ts_mono
                    out.append(
                        self._event(
                            EventType.GEOFENCE_ENTER, fence, t0, (fix.lat, fix.lon), initial=True
                        )
                    )
                continue
            if inside == track.inside:
                track.streak = 0
                if (
                    not inside
                    and joined
                    and prev is not None
                    and not parked
                    and not fence.contains(prev.lat, prev.lon)
                ):
                    out += self._pass_through(fence, prev, fix)
                continue
            if track.streak == 0:
                track.streak_ts = fix.ts_mono
                track.crossed_ts, track.crossed_at = self._crossing(
                    fence, prev, fix, joined, inside
                )
            track.streak += 1
            if (
                track.streak >= self._s.confirm_fixes
                and fix.ts_mono - track.streak_ts >= self._s.confirm_s - 1e-9
            ):
                track.inside, track.streak = inside, 0
                etype = EventType.GEOFENCE_ENTER if inside else EventType.GEOFENCE_EXIT
                out.append(self._event(etype, fence, track.crossed_ts, track.crossed_at))
        return out

    def _crossing(
        self, fence: Geofence, prev: _Point | None, fix: _Point, joined: bool, inside: bool
    ) -> tuple[float, tuple[float, float]]:
        if prev is None or not joined:
            return fix.ts_mono, (fix.lat, fix.lon)
        span = fence.segment_inside((prev.lat, prev.lon), (fix.lat, fix.lon))
        if span is None:
            return fix.ts_mono, (fix.lat, fix.lon)
        frac = span[0] if inside else span[1]
        return _at(prev, fix, frac)

    def _pass_through(self, fence: Geofence, prev: _Point, fix: _Point) -> list[Event]:
        span = fence.segment_inside((prev.lat, prev.lon), (fix.lat, fix.lon))
        if span is None or span[1] - span[0] < 1e-6:
            return []
        t_in, at_in = _at(prev, fix, span[0])
        t_out, at_out = _at(prev, fix, span[1])
        return [
            self._event(EventType.GEOFENCE_ENTER, fence, t_in, at_in, pass_through=True),
            self._event(EventType.GEOFENCE_EXIT, fence, t_out, at_out, pass_through=True),
        ]

    @staticmethod
    def _event(
        etype: EventType,
        fence: Geofence,
        ts: float,
        at: tuple[float, float],
        *,
        pass_through: bool = False,
        initial: bool = False,
    ) -> Event:
        data: dict[str, object] = {"geofence_id": fence.id, "name": fence.name}
        if pass_through:
            data["pass_through"] = True
        if initial:
            data["initial"] = True
        return Event(etype, ts, round(at[0], 7), round(at[1], 7), data)


def _at(a: _Point, b: _Point, frac: float) -> tuple[float, tuple[float, float]]:
    return (
        a.ts_mono + (b.ts_mono - a.ts_mono) * frac,
        (a.lat + (b.lat - a.lat) * frac, a.lon + (b.lon - a.lon) * frac),
    )
