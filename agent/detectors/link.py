"""Link detector: gnss_lost / gnss_regained and obd_lost / obd_regained."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import LinkDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from drivers.samples import GNSSFix, Link, LinkSample, LinkState, OBDReading, Sample

_TYPES = {
    Link.GNSS: (EventType.GNSS_LOST, EventType.GNSS_REGAINED),
    Link.OBD: (EventType.OBD_LOST, EventType.OBD_REGAINED),
}


@dataclass(slots=True)
class _LinkTrack:
    lost_since: float | None = None  # onset of the current outage
    reason: str = ""
    reported: bool = False  # the outage lasted long enough and was emitted
    was_up: bool = False  # a link that never came up (cold start) cannot be lost


class LinkDetector:
    """A link down (or a GNSS fix lost) for ``lost_s`` is reported at its onset.

    ``*_regained`` is emitted only for outages that were reported, at the moment the link came
    back. A fix (or an OBD reading) arriving counts as the link being up, so a missing UP
    transition from a driver cannot leave an outage open forever.
    """

    def __init__(self, settings: LinkDetectSection) -> None:
        self._s = settings
        self._tracks = {link: _LinkTrack() for link in Link}

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        out: list[Event] = []
        ts = sample.ts_mono
        if isinstance(sample, LinkSample):
            if sample.state == LinkState.UP:
                out += self._up(sample.link, ts, m)
            else:
                track = self._tracks[sample.link]
                if track.lost_since is None and track.was_up:
                    track.lost_since, track.reason, track.reported = ts, sample.reason, False
        elif isinstance(sample, GNSSFix):
            out += self._up(Link.GNSS, ts, m)
        elif isinstance(sample, OBDReading) and (
            sample.speed_kmh is not None or sample.rpm is not None
        ):
            out += self._up(Link.OBD, ts, m)
        out += self.tick(m.now_s if m.now_s is not None else ts, m)
        return out

    def tick(self, now_s: float, m: MotionTracker) -> list[Event]:
        out: list[Event] = []
        for link, track in self._tracks.items():
            if track.lost_since is None or track.reported:
                continue
            if now_s - track.lost_since >= self._s.lost_s:
                track.reported = True
                pos = m.position()
                out.append(
                    Event(
                        _TYPES[link][0],
                        track.lost_since,
                        None if pos is None else pos[0],
                        None if pos is None else pos[1],
                        {"reason": track.reason},
                    )
                )
        return out

    def _up(self, link: Link, ts: float, m: MotionTracker) -> list[Event]:
        track = self._tracks[link]
        track.was_up = True
        if track.lost_since is None:
            return []
        out: list[Event] = []
        if not track.reported and ts - track.lost_since >= self._s.lost_s:
            out += self.tick(ts, m)
        if track.reported:
            pos = m.position()
            out.append(
                Event(
                    _TYPES[link][1],
                    ts,
                    None if pos is None else pos[0],
                    None if pos is None else pos[1],
                    {"outage_s": round(max(0.0, ts - track.lost_since), 1)},
                )
            )
        self._tracks[link] = _LinkTrack(was_up=True)
        return out
