"""Integration fixtures: figures the tests measure, shown in the terminal summary.

A ``print`` in a passing test is swallowed by pytest's output capture (and ``make test`` runs
``-q``), so a measured figure such as the unit's exposure level would stay invisible. Figures
reported through :func:`report_figure` are listed at the end of every run instead, whatever the
verbosity and ``-r`` options, and go into the JUnit XML as test properties.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

FIGURES = pytest.StashKey[list[tuple[str, str, str]]]()


@pytest.fixture
def report_figure(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``report_figure(name, value)``: show a measured figure in the run's summary."""

    def report(name: str, value: str) -> None:
        # What the record_property fixture does, without its warning under junit_family xunit2.
        request.node.user_properties.append((name, value))
        request.config.stash.setdefault(FIGURES, []).append((request.node.nodeid, name, value))

    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    figures = config.stash.get(FIGURES, [])
    if not figures:
        return
    terminalreporter.write_sep("-", "figures measured")
    for nodeid, name, value in figures:
        terminalreporter.write_line(f"{name}: {value}  ({nodeid.split('::')[-1]})")
