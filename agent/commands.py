"""Commands: remote requests on ``cmd/{name}``, checked, applied on the pipeline thread, answered.

Every request is hostile until checked: size (4 KiB), UTF-8 JSON object, known command name, the
command's JSON Schema (``agent/schemas/cmd_*.json``), then the configuration rules. Anything that
fails gets an error result on ``cmd/{name}/result`` and changes nothing. A token bucket limits
how many requests a misbehaving broker can push at us; requests over the limit are dropped and
counted (answering them would let the flood through by the back door).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.config import Config, replace_keys, to_dict
from agent.encoder import Encoder, Lane, Message
from agent.errors import ConfigError
from agent.overrides import Overrides, allowed
from agent.validator import ValidationError, Validator

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 4096
NAMES = ("ping", "locate", "get_config", "set_config", "read_dtc", "flush")
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SCHEMA_DIR = Path(__file__).with_name("schemas")


class CommandHost(Protocol):
    """What the daemon offers the commands (every method runs on the pipeline thread)."""

    @property
    def config(self) -> Config: ...

    def apply_config(self, cfg: Config) -> None:
        """Switch to ``cfg`` atomically; raises (having changed nothing) when it cannot."""
        ...

    def health_problem(self) -> str:
        """Empty while the agent is healthy, else why not."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def locate(self) -> dict[str, Any] | None: ...

    def flush(self) -> dict[str, Any]: ...

    def read_dtc(self) -> dict[str, Any]: ...


class CommandError(Exception):
    """A command could not do what was asked; the message goes into the error result."""


class TokenBucket:
    """``rate_per_s`` requests per second on average, bursts up to ``burst``."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A set_config applied but not yet confirmed healthy."""

    request_id: str
    old: Config
    confirm_at: float


class CommandProcessor:
    """Receives raw requests (publisher thread), runs them (pipeline thread), answers them."""

    def __init__(
        self,
        host: CommandHost,
        encoder: Encoder,
        publish: Callable[[Message], None],
        submit: Callable[[Callable[[], None]], None],
        clock: Callable[[], float],
        overrides: Overrides,
        *,
        confirm_s: float | None = None,
        rate_per_s: float = 2.0,
        burst: int = 10,
    ) -> None:
        self.host = host
        self.encoder = encoder
        self._publish = publish
        self._submit = submit
        self._clock = clock
        self.overrides = overrides
        self._confirm_s = confirm_s  # None: the configuration's health.confirm_s
        self._bucket = TokenBucket(rate_per_s, burst)
        self._validators = {n: Validator.from_file(SCHEMA_DIR / f"cmd_{n}.json") for n in NAMES}
        self._pending: PendingChange | None = None
        self._lock = threading.Lock()
        self.received = 0
        self.rejected = 0
        self.dropped = 0
        self._last_drop_log = 0.0

    # -- publisher thread ----------------------------------------------------------------------

    def on_command(self, name: str, payload: bytes) -> None:
        """The publisher's hook: check cheaply here, hand everything else to the pipeline."""
        with self._lock:
            self.received += 1
            if not _NAME_RE.fullmatch(name) or not self._bucket.take():
                # No result: either the topic cannot carry one, or answering would amplify.
                self.dropped += 1
                now = time.monotonic()
                if now - self._last_drop_log > 10.0:
                    self._last_drop_log = now
                    logger.warning("dropping remote commands (%d so far): rate limit", self.dropped)
                return
        self._submit(lambda: self.handle(name, payload))

    # -- pipeline thread -----------------------------------------------------------------------

    def handle(self, name: str, payload: bytes) -> None:
        request_id: str | None = None
        try:
            request = self._parse(payload)
            raw_id = request.get("id")
            if isinstance(raw_id, str) and len(raw_id) <= 64:
                request_id = raw_id
            if name not in self._validators:
                raise CommandError(f"unknown command {name[:64]!r}; known: {', '.join(NAMES)}")
            try:
                self._validators[name].validate(request)
            except ValidationError as exc:
                raise CommandError(f"invalid request: {exc}") from None
            result = self._run(name, request)
        except CommandError as exc:
            self.rejected += 1
            logger.warning("command %s (id %s) failed: %s", name[:64], request_id, exc)
            self._answer(name, request_id, error=str(exc))
            return
        except Exception as exc:
            # Supervision point: a bug behind one command must still get an answer.
            self.rejected += 1
            logger.exception("command %s (id %s) raised", name[:64], request_id)
            self._answer(name, request_id, error=f"internal error: {type(exc).__name__}")
            return
        if result is not None:
            self._answer(name, request_id, result=result)

    def tick(self) -> None:
        """Confirm or roll back a pending set_config (called on the pipeline thread)."""
        pending = self._pending
        if pending is None:
            return
        problem = self.host.health_problem()
        if problem:
            self._rollback(pending, f"agent unhealthy after the change ({problem}); rolled back")
            return
        if time.monotonic() >= pending.confirm_at:
            self._pending = None
            try:
                self.overrides.confirm()
            except OSError as exc:
                self._rollback(pending, f"cannot persist the change ({exc}); rolled back")
                return
            cfg = self.host.config
            logger.info("remote configuration change %s confirmed", pending.request_id)
            self._answer(
                "set_config",
                pending.request_id,
                result={"applied": True, "config_hash": cfg.digest()},
            )

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def _parse(self, payload: bytes) -> dict[str, Any]:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CommandError(f"payload too large: {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
        try:
            text = payload.decode("utf-8")
            doc = json.loads(text, parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            raise CommandError(f"payload is not UTF-8 (byte {exc.start})") from None
        except (ValueError, RecursionError) as exc:
            raise CommandError(f"malformed JSON: {str(exc)[:120]}") from None
        if not isinstance(doc, dict):
            raise CommandError("request must be a JSON object")
        return doc

    def _run(self, name: str, request: dict[str, Any]) -> dict[str, Any] | None:
        if name == "ping":
            return {"pong": True, **self.host.describe()}
        if name == "locate":
            where = self.host.locate()
            if where is None:
                raise CommandError("no GNSS fix yet")
            return where
        if name == "get_config":
            cfg = self.host.config
            return {"config": to_dict(cfg), "config_hash": cfg.digest()}
        if name == "read_dtc":
            return self.host.read_dtc()
        if name == "flush":
            return self.host.flush()
        if name == "set_config":
            self._set_config(request["id"], request["changes"])
            return None  # answered once confirmed or rolled back
        raise CommandError(f"unknown command {name!r}")  # pragma: no cover - NAMES covers it

    def _set_config(self, request_id: str, changes: Mapping[str, Any]) -> None:
        if self._pending is not None:
            raise CommandError(
                f"change {self._pending.request_id!r} is still being confirmed; retry later"
            )
        refused = sorted(k for k in changes if not allowed(k))
        if refused:
            raise CommandError(
                f"key {refused[0]!r} cannot be changed remotely"
                " (allowed: report.*, detect.*, health.interval_s, spool.flush_interval_s)"
            )
        old = self.host.config
        try:
            new = replace_keys(old, changes)
        except ConfigError as exc:
            raise CommandError(str(exc).removeprefix(f"{old.source}: ")) from None
        try:
            old_overrides = self.overrides.read()
        except ConfigError:
            old_overrides = {}
        try:
            self.host.apply_config(new)
        except Exception as exc:
            # apply_config changes nothing when it raises; say why in plain words.
            raise CommandError(f"cannot apply the change ({exc}); nothing changed") from None
        try:
            self.overrides.stage({**old_overrides, **changes})
        except OSError as exc:
            self.host.apply_config(old)
            raise CommandError(f"cannot persist the change ({exc}); rolled back") from None
        confirm_s = new.health.confirm_s if self._confirm_s is None else self._confirm_s
        logger.info(
            "remote configuration change %s applied (%s); confirming for %.1f s",
            request_id,
            ", ".join(sorted(changes)),
            confirm_s,
        )
        self._pending = PendingChange(request_id, old, time.monotonic() + confirm_s)

    def _rollback(self, pending: PendingChange, why: str) -> None:
        self._pending = None
        logger.warning("remote configuration change %s: %s", pending.request_id, why)
        try:
            self.host.apply_config(pending.old)
            self.overrides.discard()
        except Exception:
            logger.exception("rolling back configuration change %s failed", pending.request_id)
        self._answer("set_config", pending.request_id, error=why)

    def _answer(
        self,
        name: str,
        request_id: str | None,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        payload = self.encoder.envelope("cmd_result", self._clock(), durable=False)
        payload.update(command=name, id=request_id, ok=error is None)
        if error is not None:
            payload["error"] = error[:1024]
        if result is not None:
            payload["result"] = result
        topic = self.encoder.identity.topic(f"cmd/{name}/result")
        self._publish(Message(topic, payload, Lane.RESULT))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
