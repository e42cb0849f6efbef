"""GNSS receiver: the van's true state turned into the NMEA a real receiver sends, errors included.

``Receiver`` is sans-IO (state in, bytes out) so ``record`` can use it without a clock;
``GNSSTalker`` plays it on a pseudo-terminal in scaled real time. Modelled behaviour:
- position error as a Gauss-Markov process scaled by HDOP (about 1 m x HDOP while moving); when
  parked, multipath makes the position wander a few metres and speed/course flicker;
- cold start: no fix and no time (empty time fields) until ``cold_start_s``;
- fix loss (tunnels): status V, empty positions, time still running, no satellites in view;
- on demand (scenario times, or ``Receiver.inject``: ``run`` maps SIGUSR1 / SIGUSR2 to it):
  bursts of garbage bytes (no ``$`` and no line end, as after a baud-rate glitch) and
  sentences with a wrong checksum;
- RMC, VTG, GGA every epoch at 1-10 Hz; GSA and GSV once per second, as u-blox receivers do.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from simulator.model import EARTH_RADIUS_M, VehicleModel
from simulator.nmea import Epoch, Satellite, Talker, encode_epoch, frame
from simulator.pty import PtyDevice
from simulator.scenario import GNSSFaults
from simulator.state import VehicleState

logger = logging.getLogger(__name__)

MPS_PER_KNOT = 1852.0 / 3600.0
MAX_LAG_REAL_S = 2.0
GPS_PRNS = (2, 5, 7, 9, 13, 15, 18, 20, 23, 26, 29)
GLONASS_PRNS = (65, 66, 72, 73, 74, 80, 81)


class SimClock(Protocol):
    """Simulated time now, and how fast it runs relative to real time."""

    time_scale: float

    def now_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class _Orbit:
    prn: int
    system: str
    elevation_deg: float
    azimuth_deg: float


class Receiver:
    """A GNSS receiver's output for successive true states (call once per epoch, in time order)."""

    def __init__(
        self, faults: GNSSFaults, talker: Talker = Talker.GP, rate_hz: float = 1.0, seed: int = 1
    ) -> None:
        if not 1.0 <= rate_hz <= 10.0:
            raise ValueError(f"rate_hz must be 1..10, got {rate_hz}")
        self.faults = faults
        self.talker = talker
        self.rate_hz = rate_hz
        self._rng = random.Random(seed)
        self._orbits = self._constellation()
        self._had_fix = False
        self._err_e_m = 0.0
        self._err_n_m = 0.0
        self._err_alt_m = 0.0
        self._last_t_s: float | None = None
        self._epochs = 0
        self._garbage_done = 0
        self._corrupt_done = 0
        self._corrupt_left = 0
        self._garbage_pending = 0
        self._inject_lock = threading.Lock()
        self.sentences = 0
        self.corrupted = 0
        self.garbage_bytes = 0

    def _constellation(self) -> list[_Orbit]:
        systems: list[tuple[str, tuple[int, ...]]] = [("GP", GPS_PRNS)]
        if self.talker is Talker.GN:
            systems.append(("GL", GLONASS_PRNS))
        return [
            _Orbit(prn, system, self._rng.uniform(8.0, 80.0), self._rng.uniform(0.0, 360.0))
            for system, prns in systems
            for prn in prns
        ]

    def epoch(self, state: VehicleState) -> Epoch:
        """The receiver's report for ``state`` (advances its error processes)."""
        dt_s = (
            1.0 / self.rate_hz if self._last_t_s is None else max(state.t_s - self._last_t_s, 1e-3)
        )
        self._last_t_s = state.t_s
        if not state.gnss_fix:
            return Epoch(utc=state.utc if self._had_fix else None, fix=False)
        self._had_fix = True
        parked = state.speed_kmh < 1.0
        satellites = []
        used = []
        for orbit in self._orbits:
            azimuth = (orbit.azimuth_deg + state.t_s * 0.004) % 360.0
            snr = 18.0 + orbit.elevation_deg * 0.35 + self._rng.gauss(0.0, 1.5)
            if parked and orbit.elevation_deg < 30.0:
                snr -= 6.0  # low satellites reflected off buildings around the parked van
            snr_db = int(min(max(snr, 10.0), 50.0))
            satellites.append(
                Satellite(orbit.prn, int(orbit.elevation_deg), int(azimuth), snr_db, orbit.system)
            )
            if snr_db >= 25 and orbit.elevation_deg >= 10.0:
                used.append(orbit.prn)
        hdop = round(0.55 + 4.0 / max(len(used), 4) + (0.35 if parked else 0.0), 2)
        noise = self.faults.noise_scale
        sigma_m, tau_s = (2.5 * hdop * noise, 60.0) if parked else (1.0 * hdop * noise, 30.0)
        rho = math.exp(-dt_s / tau_s)
        spread = sigma_m * math.sqrt(1.0 - rho * rho)
        self._err_e_m = rho * self._err_e_m + spread * self._rng.gauss(0.0, 1.0)
        self._err_n_m = rho * self._err_n_m + spread * self._rng.gauss(0.0, 1.0)
        self._err_alt_m = rho * self._err_alt_m + 1.5 * spread * self._rng.gauss(0.0, 1.0)
        lat = state.lat + math.degrees(self._err_n_m / EARTH_RADIUS_M)
        lon = state.lon + math.degrees(
            self._err_e_m / (EARTH_RADIUS_M * math.cos(math.radians(state.lat)))
        )
        if parked and noise > 0:
            # A parked receiver reports a flickering speed of a few cm/s and a random course.
            speed_mps = abs(self._rng.gauss(0.0, 0.08 * noise))
            course = self._rng.uniform(0.0, 360.0)
        else:
            speed_mps = max(state.speed_kmh / 3.6 + self._rng.gauss(0.0, 0.05 * noise), 0.0)
            course = (state.course_deg + self._rng.gauss(0.0, 0.3 * noise)) % 360.0
        return Epoch(
            utc=state.utc,
            fix=True,
            lat=lat,
            lon=lon,
            alt_m=state.alt_m + self._err_alt_m,
            speed_knots=speed_mps / MPS_PER_KNOT,
            course_deg=course,
            used_prns=tuple(used),
            hdop=hdop,
            pdop=round(hdop * 1.6, 2),
            vdop=round(hdop * 1.3, 2),
            satellites=tuple(satellites),
        )

    def inject(self, garbage_bytes: int = 0, bad_checksums: int = 0) -> None:
        """Faults on demand (any thread): garbage before the next epoch, corrupt next sentences."""
        with self._inject_lock:
            self._garbage_pending += garbage_bytes
            self._corrupt_left += bad_checksums

    def epoch_bytes(self, state: VehicleState) -> bytes:
        """The bytes the receiver writes for ``state``'s epoch, faults due by then included."""
        epoch = self.epoch(state)
        with_satellites = self._epochs % max(1, round(self.rate_hz)) == 0
        self._epochs += 1
        out = bytearray()
        garbage = self.faults.garbage
        with self._inject_lock:
            counts = [self._garbage_pending] if self._garbage_pending else []
            self._garbage_pending = 0
        while self._garbage_done < len(garbage) and garbage[self._garbage_done].t_s <= state.t_s:
            counts.append(garbage[self._garbage_done].count)
            self._garbage_done += 1
        for count in counts:
            out += bytes(self._rng.choice(_GARBAGE_ALPHABET) for _ in range(count))
            self.garbage_bytes += count
        bad = self.faults.bad_checksums
        while self._corrupt_done < len(bad) and bad[self._corrupt_done].t_s <= state.t_s:
            self.inject(bad_checksums=bad[self._corrupt_done].count)
            self._corrupt_done += 1
        for body in encode_epoch(self.talker, epoch, with_satellites=with_satellites):
            with self._inject_lock:
                corrupt = self._corrupt_left > 0
                if corrupt:
                    self._corrupt_left -= 1
            self.corrupted += corrupt
            out += frame(body, corrupt=corrupt).encode("ascii")
            self.sentences += 1
        return bytes(out)


# Garbage as after a baud-rate glitch: any byte (NUL and 8-bit included) except "$" and line ends,
# so it glues onto the next sentence and a reader must resynchronise on "$".
_GARBAGE_ALPHABET = tuple(b for b in range(256) if b not in (0x24, 0x0A, 0x0D))


class GNSSTalker:
    """Plays a ``Receiver`` on a pseudo-terminal, one epoch per 1/rate_hz simulated seconds."""

    def __init__(
        self,
        model: VehicleModel,
        clock: SimClock,
        device: PtyDevice,
        receiver: Receiver,
        shown: Callable[[float, float], None] | None = None,
    ) -> None:
        """``shown(t_s, now_s)``: called after each epoch is played (written, or the device
        unplugged or replugged) with its simulated time and the clock's time then."""
        self.model = model
        self.clock = clock
        self.device = device
        self.receiver = receiver
        self._shown = shown
        self.epochs_written = 0
        self.epochs_skipped = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gnss-talker", daemon=True)

    def start(self) -> None:
        self.device.plug()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self.device.unplug()

    def _run(self) -> None:
        period_s = 1.0 / self.receiver.rate_hz
        n = 0
        while not self._stop.is_set():
            t_s = n * period_s
            now_s = self.clock.now_s()
            if now_s < t_s:
                self._stop.wait((t_s - now_s) / self.clock.time_scale)
                continue
            if (now_s - t_s) / self.clock.time_scale > MAX_LAG_REAL_S:
                # Far behind (a stalled machine): jump to now rather than flood stale epochs.
                # Short lags are caught up in a burst, so the bytes stay those of a capture.
                skipped = int((now_s - t_s) / period_s)
                self.epochs_skipped += skipped
                logger.warning(
                    "GNSS talker %.1f s behind; skipping %d epochs", now_s - t_s, skipped
                )
                n += skipped
                continue
            try:
                self._emit(t_s)
            except Exception:
                # Supervision point: one bad epoch must not silence the receiver for good.
                self.errors += 1
                logger.exception("GNSS talker failed at t=%.1f s; continuing", t_s)
                self._stop.wait(0.1)
            n += 1

    def _emit(self, t_s: float) -> None:
        state = self.model.state_at(t_s)
        data = self.receiver.epoch_bytes(state)
        if state.gnss_online != self.device.online:
            # Scenario unplug/replug: the port vanishes (EIO, then ENOENT) and comes back.
            logger.info("GNSS receiver %s", "replugged" if state.gnss_online else "unplugged")
            if state.gnss_online:
                self.device.replug()
            else:
                self.device.unplug()
        if state.gnss_online:
            self.device.write(data)
            self.epochs_written += 1
        if self._shown is not None:
            self._shown(t_s, self.clock.now_s())
