"""Log setup: journald with structured fields under systemd, plain stderr everywhere else.

Under systemd, ``$JOURNAL_STREAM`` names the device and inode of the journal stream our stderr is
connected to (systemd.exec(5)); when stderr still is that stream we log straight to journald
through systemd-python, so each entry carries ``DEVICE_ID`` and, for fleet events,
``EVENT_TYPE`` (``journalctl DEVICE_ID=van-0042 EVENT_TYPE=harsh_brake``). Anywhere else (a
terminal, a test, a pipe) logs go to stderr without timestamps.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

FORMAT = "%(levelname)s %(name)s: %(message)s"


def journal_stream_matches(environ: Mapping[str, str], stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd connected us to."""
    raw = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = raw.partition(":")
    if not dev or not ino:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == raw


class EventFieldFilter(logging.Filter):
    """Adds DEVICE_ID to every record and normalises an ``event_type`` extra to EVENT_TYPE."""

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.DEVICE_ID = self.device_id
        event_type = getattr(record, "event_type", None)
        if event_type is not None:
            record.EVENT_TYPE = str(event_type)
        return True


def journal_handler(device_id: str) -> logging.Handler | None:
    try:
        journal: Any = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER="telematics-agent")
    handler.addFilter(EventFieldFilter(device_id))
    return handler


def stderr_handler(device_id: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(EventFieldFilter(device_id))
    return handler


def configure(
    level: str, device_id: str, environ: Mapping[str, str] | None = None
) -> logging.Handler:
    """Install the one root handler for the daemon; returns it (tests look at its type)."""
    env = os.environ if environ is None else environ
    handler = None
    if journal_stream_matches(env, sys.stderr):
        handler = journal_handler(device_id)
    if handler is None:
        handler = stderr_handler(device_id)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler
