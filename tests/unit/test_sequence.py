"""Sequence counter: numbers never handed out twice, across restarts, without fsync per record."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sequence import SequenceCounter


def test_starts_at_one_and_counts(tmp_path: Path) -> None:
    seq = SequenceCounter(tmp_path / "seq", reserve=10)
    assert [seq.take() for _ in range(3)] == [1, 2, 3]
    assert seq.last_value == 3


def test_a_restart_never_reuses_a_number_even_unpersisted(tmp_path: Path) -> None:
    # No persist() call: as if the process died while positions waited in memory.
    first = SequenceCounter(tmp_path / "seq", reserve=10)
    used = [first.take() for _ in range(7)]
    second = SequenceCounter(tmp_path / "seq", reserve=10)
    assert second.take() > max(used)


def test_the_file_is_written_once_per_reserve(tmp_path: Path) -> None:
    path = tmp_path / "seq"
    seq = SequenceCounter(path, reserve=10)
    seq.take()
    stamp = path.stat().st_mtime_ns, path.read_text()
    for _ in range(8):
        seq.take()
    assert (path.stat().st_mtime_ns, path.read_text()) == stamp
    seq.take()  # the 10th number is still inside the reservation
    seq.take()  # the 11th raises the ceiling
    assert int(path.read_text()) == 21


def test_bump_to_then_persist_covers_the_bumped_value(tmp_path: Path) -> None:
    seq = SequenceCounter(tmp_path / "seq", reserve=10)
    seq.bump_to(500)
    seq.persist()
    assert SequenceCounter(tmp_path / "seq").take() > 500
    assert seq.take() == 501


def test_a_damaged_file_is_refused_not_restarted_from_one(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("12x\n")
    with pytest.raises(ValueError, match="corrupt sequence file"):
        SequenceCounter(tmp_path / "seq")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8))
def test_numbers_grow_across_any_pattern_of_restarts(takes: list[int]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "seq"
        seen: list[int] = []
        for n in takes:
            seq = SequenceCounter(path, reserve=16)
            seen.extend(seq.take() for _ in range(n))
        assert seen == sorted(set(seen))
