"""Maps end to end, run in chunks: batch events, per-element retries and failures, bounds, abort,
recovery and a killed engine, on both event stores."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from engine import Engine, ExecutionAborted, TaskFailed
from engine._postgres_store import PostgresEventStore
from engine._sqlite_store import SqliteEventStore
from engine.events import ChunkFinished, ChunkQueued, ElementsReused, NodeFailed, NodeQueued, NodeRunning
from engine.interfaces import EventStore
from engine.state import ExecutionState
from plugins.local import LocalExecutor

from . import _workflows as wf
from .conftest import wait_until
from .test_crash import ROOT, read_log, run_engine
from .test_engine import assert_log_is_sane


def element_runs(side_effects: Path, name: str, execution_id: str | None = None, what: str = "done") -> Counter[str]:
    """Element node id -> how many lines ``what`` the task ``name`` logged (see ``record_element``)."""
    path = side_effects / f"{name}.log"
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines() if path.exists() else []:
        execution, node_id, _attempt, kind = line.split()
        if kind == what and execution_id in (None, execution):
            counts[node_id] += 1
    return counts


def successes(history: list, map_id: str) -> Counter[int]:
    """Element index -> how many successful results the chunks of ``map_id`` recorded."""
    counts: Counter[int] = Counter()
    for event in history:
        if isinstance(event, ChunkFinished) and event.node_id.rpartition("/")[0] == map_id:
            counts.update(result.index for result in event.results if result.error is None)
    return counts


def attempts(history: list) -> list[tuple[int, int]]:
    """(element, attempt) of every element every chunk ran, in the order they were queued."""
    return [pair for e in history if isinstance(e, ChunkQueued) for pair in zip(e.elements, e.attempts, strict=True)]


def map_row(details, map_id: str):
    """The map's one row in ``Engine.get``; no element of it has a row of its own."""
    assert not [n.node_id for n in details.nodes if n.node_id.startswith(map_id + "/")]
    (row,) = [n for n in details.nodes if n.node_id == map_id]
    return row


# --- size of the log ---------------------------------------------------------------------------------


async def test_a_wide_map_logs_a_few_events_per_chunk(eng: Engine) -> None:
    handle = await eng.launch(wf.wide_map, xs=list(range(2000)))
    assert await handle.outputs(timeout=30) == [2 * x for x in range(2000)]
    history = await eng.history(handle.execution_id)
    assert_log_is_sane(history)
    # three events per chunk (queued, running, finished) and a handful for the execution and the
    # map; chunks hold many elements (one event per element would be 2,000 events at least)
    chunks = [e for e in history if isinstance(e, ChunkQueued)]
    assert len(history) <= 3 * len(chunks) + 10, Counter(type(e).__name__ for e in history)
    assert len(chunks) < 2000 / 10 and len(history) < 2000 / 5
    # no event per element: elements only appear inside batch events
    assert not [e for e in history if isinstance(e, NodeQueued) and e.node_id.startswith("map_double/")]
    assert sum(len(e.elements) for e in chunks) == 2000
    assert [e.node_id for e in chunks] == [f"map_double/c{i}" for i in range(1, len(chunks) + 1)]
    assert successes(history, "map_double") == Counter(range(2000))
    row = map_row(await eng.get(handle.execution_id), "map_double")
    assert (row.phase, row.size, row.succeeded, row.failed, row.running) == ("succeeded", 2000, 2000, 0, 0)


# --- retries per element -----------------------------------------------------------------------------


async def test_an_element_retries_on_its_own_user_budget(eng: Engine, side_effects: Path) -> None:
    xs = list(range(12))
    handle = await eng.launch(wf.retrying_map, xs=xs)
    assert await handle.outputs(timeout=30) == [x + 1 for x in xs]
    flaky = {x for x in xs if x % 3 == 1}
    runs = element_runs(side_effects, "first_attempt_fails", handle.execution_id)
    assert runs == Counter({f"map_first_attempt_fails/{x}": 2 if x in flaky else 1 for x in xs})

    history = await eng.history(handle.execution_id)
    assert_log_is_sane(history)
    assert successes(history, "map_first_attempt_fails") == Counter(xs)
    failed = {(r.index, r.attempt) for e in history if isinstance(e, ChunkFinished) for r in e.results if r.error}
    assert failed == {(x, 1) for x in flaky}
    queued = [
        (i, a) for e in history if isinstance(e, ChunkQueued) for i, a in zip(e.elements, e.attempts, strict=True)
    ]
    assert sorted(queued) == sorted([(x, 1) for x in xs] + [(x, 2) for x in flaky])
    errors = [r.error for e in history if isinstance(e, ChunkFinished) for r in e.results if r.error]
    assert all(e.kind == "user" and "fails its first attempt" in e.message for e in errors)


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], EventStore]:
    """Stores on the same log as ``make_engine``'s, for engines with an executor of their own."""
    if store_kind == "sqlite":
        return lambda: SqliteEventStore(tmp_path / "events.db")
    dsn = request.getfixturevalue("postgres_database")
    schema = request.getfixturevalue("postgres_schema")
    return lambda: PostgresEventStore(dsn, schema=schema)


async def test_a_worker_death_fails_its_chunk_and_every_element_retries_on_the_system_budget(
    make_store: Callable[[], EventStore], side_effects: Path
) -> None:
    xs, victim = list(range(64)), 5  # 64 elements: chunks of several elements each
    executor = LocalExecutor(mode="process", max_workers=2)
    async with Engine(make_store(), {"local": executor}, retry_delay=0.05) as eng:
        handle = await eng.launch(wf.dying_map, xs=xs, victim=victim)
        assert await handle.outputs(timeout=60) == [3 * x for x in xs]
        history = await eng.history(handle.execution_id)
    assert_log_is_sane(history)

    chunks = {e.node_id: e for e in history if isinstance(e, ChunkQueued)}
    (lost,) = [e for e in history if isinstance(e, NodeFailed)]  # the victim's chunk, nothing else
    assert lost.node_id.startswith("map_dies_once/c") and lost.error.kind == "system"
    members = chunks[lost.node_id].elements
    assert victim in members and len(members) > 1  # its chunk-mates failed with it
    assert chunks[lost.node_id].attempts == [1] * len(members)
    retried = {
        i: a
        for e in history
        if isinstance(e, ChunkQueued)
        for i, a in zip(e.elements, e.attempts, strict=True)
        if a > 1
    }
    assert retried == dict.fromkeys(members, 2)  # each on its own budget: attempt 2, nothing else again
    # every element succeeded exactly once in the log, however often its body ran
    assert successes(history, "map_dies_once") == Counter(xs)
    started = element_runs(side_effects, "dies_once", handle.execution_id, what="started")
    assert started[f"map_dies_once/{victim}"] == 2
    assert all(started[f"map_dies_once/{x}"] == 1 for x in xs if x not in members)


# --- min_success_ratio -------------------------------------------------------------------------------


async def test_a_tolerant_map_yields_none_for_failed_elements(eng: Engine) -> None:
    xs = list(range(10))
    handle = await eng.launch(wf.half_tolerant_map, xs=xs)
    assert await handle.outputs(timeout=30) == [None if x % 2 else x for x in xs]
    details = await eng.get(handle.execution_id)
    assert details.status == "succeeded"
    row = map_row(details, "map_odd_fails")
    assert (row.phase, row.size, row.succeeded, row.failed, row.running) == ("succeeded", 10, 5, 5, 0)


async def test_a_map_below_its_success_ratio_fails_naming_the_first_failure(eng: Engine) -> None:
    handle = await eng.launch(wf.too_few_succeed_map, xs=list(range(10)))
    with pytest.raises(TaskFailed) as failure:
        await handle.outputs(timeout=30)
    history = await eng.history(handle.execution_id)
    assert_log_is_sane(history)
    (map_failed,) = [e for e in history if isinstance(e, NodeFailed) and e.node_id == "map_odd_fails"]
    before = history[: map_failed.version - 1]
    errors = [r for e in before if isinstance(e, ChunkFinished) for r in e.results if r.error is not None]
    first = errors[0].index  # elements fail in the order their chunks end
    assert len(errors) >= 4  # 7 of 10 must succeed: the 4th failure decides
    assert failure.value.node_id == "map_odd_fails"
    message = str(failure.value)
    assert f"{len(errors)} of 10 map elements failed; min_success_ratio needs 7 to succeed" in message
    assert f"First failure (map_odd_fails/{first})" in message and f"odd element {first} is bad" in message
    details = await eng.get(handle.execution_id)
    row = map_row(details, "map_odd_fails")
    assert (row.phase, row.size, row.failed) == ("failed", 10, len(errors))


# --- concurrency -------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", [wf.bounded_map, wf.bounded_async_map], ids=["sync", "async"])
async def test_concurrency_bounds_the_elements_running_at_once(eng: Engine, side_effects: Path, workflow) -> None:
    xs = list(range(15))
    handle = await eng.launch(workflow, xs=xs)
    assert await handle.outputs(timeout=30) == xs
    # lines are appended in the order elements start and end, so a running count over them is exact
    running = peak = 0
    for line in (side_effects / "busy.log").read_text().splitlines():
        running += 1 if line.endswith(" start") else -1
        peak = max(peak, running)
    assert running == 0 and 1 <= peak <= 3
    if workflow is wf.bounded_async_map:
        assert peak == 3  # a chunk's async elements run together, so the bound is reached
    history = await eng.history(handle.execution_id)
    assert all(len(e.elements) <= 3 for e in history if isinstance(e, ChunkQueued))


# --- abort -------------------------------------------------------------------------------------------


async def test_abort_mid_map_cancels_the_running_chunks(eng: Engine, side_effects: Path) -> None:
    handle = await eng.launch(wf.hanging_map, xs=list(range(20)))
    started = lambda: element_runs(side_effects, "hang", handle.execution_id, what="started")  # noqa: E731
    await wait_until(lambda: sum(started().values()) >= 4)
    row = map_row(await eng.get(handle.execution_id), "map_hang_element")
    assert (row.phase, row.size, row.succeeded, row.failed, row.running) == ("running", 20, 0, 0, 4)

    await eng.abort(handle.execution_id, reason="enough of this map")
    with pytest.raises(ExecutionAborted, match="enough of this map"):
        await handle.outputs(timeout=10)
    # every element that started was really cancelled (so none can get past its sleep)
    cancelled = lambda: element_runs(side_effects, "hang", handle.execution_id, what="cancelled")  # noqa: E731
    await wait_until(lambda: cancelled() == started())
    assert sum(started().values()) == 4  # concurrency=4: the other 16 never started
    assert not element_runs(side_effects, "hang", handle.execution_id, what="woke")
    history = await eng.history(handle.execution_id)
    assert_log_is_sane(history)
    assert type(history[-1]).__name__ == "ExecutionAborted"
    assert not [e for e in history if isinstance(e, ChunkFinished)]
    assert (await eng.get(handle.execution_id)).status == "aborted"


# --- recovery ----------------------------------------------------------------------------------------


async def test_recovering_a_map_reruns_only_its_failed_elements(
    eng: Engine, side_effects: Path, tmp_path: Path
) -> None:
    xs, marker = list(range(6)), tmp_path / "marker"
    first = await eng.launch(wf.fixable_map, xs=xs, marker=str(marker))
    with pytest.raises(TaskFailed, match=r"2 of 6 map elements failed.*map_fixable/1"):
        await first.outputs(timeout=30)
    assert element_runs(side_effects, "fixable", first.execution_id) == Counter(f"map_fixable/{x}" for x in xs)

    marker.touch()
    second = await eng.recover(first.execution_id)
    assert await second.outputs(timeout=30) == [x * 10 for x in xs]
    history = await eng.history(second.execution_id)
    assert_log_is_sane(history)
    reused = [r.index for e in history if isinstance(e, ElementsReused) for r in e.results]
    assert sorted(reused) == [0, 2, 3, 4]
    assert {e.source for e in history if isinstance(e, ElementsReused)} == {f"recovered:{first.execution_id}"}
    assert element_runs(side_effects, "fixable", second.execution_id) == Counter(["map_fixable/1", "map_fixable/5"])
    assert successes(history, "map_fixable") == Counter([1, 5])
    row = map_row(await eng.get(second.execution_id), "map_fixable")
    assert (row.phase, row.succeeded, row.failed) == ("succeeded", 6, 0)


# --- a killed engine ---------------------------------------------------------------------------------


@pytest.fixture
def target(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if store_kind == "sqlite":
        return f"sqlite:{tmp_path / 'events.db'}"
    dsn = request.getfixturevalue("postgres_database")
    return f"postgres:{dsn}#{request.getfixturevalue('postgres_schema')}"


def in_flight_elements(events: list) -> set[int]:
    """Elements of chunks queued and not finished in ``events``."""
    chunks = {e.node_id: e.elements for e in events if isinstance(e, ChunkQueued)}
    for event in events:
        if isinstance(event, ChunkFinished | NodeFailed):
            chunks.pop(event.node_id, None)
    return {index for elements in chunks.values() for index in elements}


@pytest.mark.parametrize("kill", ["after_append:6", "after_append:12", "test"])
async def test_sigkill_mid_map_then_resume_runs_no_element_twice(
    target: str, kill: str, side_effects: Path, tmp_path: Path
) -> None:
    n = 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SLIPSTREAM_TEST_FAULT", None)
    if kill == "test":
        # the test kills the engine once some elements are done, wherever it is in its round
        command = [sys.executable, "-m", "tests.engine._crash_runner", target, "launch", "map-crash", "crash_map"]
        errors = tmp_path / "engine.stderr"
        with errors.open("wb") as stderr_file:
            engine = await anyio.open_process(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr_file)
            try:
                done = lambda: sum(element_runs(side_effects, "slow_element").values()) >= 10  # noqa: E731
                # (or the engine ended early: then its exit status and stderr say why)
                await wait_until(lambda: done() or engine.returncode is not None, timeout=30)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    engine.kill()
                returncode = await engine.wait()
        stderr = errors.read_text()
    else:
        crashed = run_engine(target, "launch", "map-crash", {**env, "SLIPSTREAM_TEST_FAULT": kill}, "crash_map")
        returncode, stderr = crashed.returncode, crashed.stderr
    assert returncode == -9, f"the engine was not killed mid-map:\n{stderr}"

    before = await read_log(target, "map-crash")
    assert not ExecutionState.fold(before).is_terminal
    assert [e for e in before if isinstance(e, ChunkQueued)], "killed before the map started"
    done_before = set(successes(before, "map_slow_element"))
    assert 0 < len(done_before) < n, "not killed mid-map"
    in_flight = in_flight_elements(before)

    resumed = run_engine(target, "resume", "map-crash", env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == str([x + 1 for x in range(n)])

    after = await read_log(target, "map-crash")
    assert_log_is_sane(after)
    assert after[: len(before)] == before  # the log only grew
    assert successes(after, "map_slow_element") == Counter(range(n))  # no element succeeded twice
    runs = element_runs(side_effects, "slow_element")
    for x in range(n):
        assert runs[f"map_slow_element/{x}"] >= 1, f"element {x} never ran"
        if x in done_before:
            assert runs[f"map_slow_element/{x}"] == 1, f"element {x} had succeeded before the kill but ran again"
    # only the chunks in flight at the kill ran again
    assert {x for x in range(n) if runs[f"map_slow_element/{x}"] > 1} <= in_flight
    # the resumed engine found the chunks that had started lost (a system failure of each of their
    # elements, retried on its budget) and resubmitted those that had not
    finished = {e.node_id for e in before if isinstance(e, ChunkFinished | NodeFailed)}
    started = {e.node_id for e in before if isinstance(e, NodeRunning) and "/c" in e.node_id} - finished
    lost = {e.node_id: e.error for e in after[len(before) :] if isinstance(e, NodeFailed)}
    assert set(lost) == started
    assert all(error.kind == "system" and "lost" in error.message for error in lost.values())
