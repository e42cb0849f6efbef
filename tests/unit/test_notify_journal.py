"""Log destination: journald (structured fields) only when stderr is systemd's journal stream."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator

import pytest

from agent import logsetup


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_journal_stream_must_be_our_stderr() -> None:
    a, b = socket.socketpair()
    with a, b, a.makefile("w") as stream:
        st = os.fstat(a.fileno())
        ours = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logsetup.journal_stream_matches(ours, stream)
        # Inherited by a child whose stderr was redirected elsewhere: not the journal.
        assert not logsetup.journal_stream_matches({"JOURNAL_STREAM": "1:2"}, stream)
        assert not logsetup.journal_stream_matches({"JOURNAL_STREAM": "garbage"}, stream)
        assert not logsetup.journal_stream_matches({}, stream)


def test_outside_systemd_logs_go_to_stderr_with_fields(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = logsetup.configure("info", "van-7", environ={})
    assert isinstance(handler, logging.StreamHandler)
    logging.getLogger("agent.daemon").info("event %s", "harsh_brake", extra={"event_type": "x"})
    err = capsys.readouterr().err
    assert err == "INFO agent.daemon: event harsh_brake\n", "no timestamps: journald adds them"


def test_structured_fields_are_attached() -> None:
    record = logging.LogRecord("agent.daemon", logging.INFO, __file__, 1, "event", (), None)
    record.event_type = "harsh_brake"
    assert logsetup.EventFieldFilter("van-7").filter(record)
    # The filter sets plain instance attributes; LogRecord declares no such fields.
    assert vars(record)["DEVICE_ID"] == "van-7"
    assert vars(record)["EVENT_TYPE"] == "harsh_brake"


def test_under_systemd_the_journal_handler_is_used(restore_root: None) -> None:
    pytest.importorskip("systemd.journal")
    st = os.fstat(sys.stderr.fileno())
    env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    handler = logsetup.configure("info", "van-7", environ=env)
    assert type(handler).__name__ == "JournalHandler"
    assert any(isinstance(f, logsetup.EventFieldFilter) for f in handler.filters)
