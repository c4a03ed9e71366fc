"""The fault suite (marked ``faults``: ``pytest -m faults`` runs it alone) and its summary: one
line per fault (runs, executions completed, events lost, duplicates), printed as each fault ends
(seen with ``-s``) and repeated at the end of the pytest report. With ``SLIPSTREAM_FAULTS_RESULTS``
set (a path, or ``1`` for ``benchmarks/results/faults.txt``) the lines are also kept in that file,
a line per fault, replaced when it runs again (a partial run keeps the other faults' last lines);
not by default, so that a test run leaves the checkout as it was."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._checks import Audit

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "faults.txt"


def results_path() -> Path | None:
    """Where to keep the summary lines (``SLIPSTREAM_FAULTS_RESULTS``), or None."""
    chosen = os.environ.get("SLIPSTREAM_FAULTS_RESULTS", "")
    if chosen in ("", "0"):
        return None
    return RESULTS if chosen == "1" else Path(chosen)


_KEY = pytest.StashKey["FaultSummary"]()


class FaultSummary:
    """The session's summary lines, by fault."""

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}
        self.test_started = time.monotonic()

    def record(self, fault: str, runs: int, audit: Audit, note: str = "") -> str:
        """Add (and print) the line of ``fault``; return it."""
        line = (
            f"fault {fault}: runs {runs}, {audit.summary()}"
            + (f"; {note}" if note else "")
            + f" ({time.monotonic() - self.test_started:.1f} s)"
        )
        self.lines[fault] = line
        print(f"\n{line}", flush=True)
        return line

    def write(self, path: Path) -> None:
        kept: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith("fault "):
                    kept[line.split(":", 1)[0]] = line
        kept.update({line.split(":", 1)[0]: line for line in self.lines.values()})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(kept.values()) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite (tests/faults); `-m faults` runs it alone")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def fault_summary(request: pytest.FixtureRequest) -> Iterator[FaultSummary]:
    summary = FaultSummary()
    request.config.stash[_KEY] = summary
    yield summary
    path = results_path()
    if summary.lines and path is not None:
        summary.write(path)


@pytest.fixture(autouse=True)
def _time_each_fault(fault_summary: FaultSummary) -> None:
    fault_summary.test_started = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    summary = config.stash.get(_KEY, None)
    if summary is not None and summary.lines:
        terminalreporter.section("fault suite")
        for line in summary.lines.values():
            terminalreporter.write_line(line)
