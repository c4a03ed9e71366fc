"""The engine process SIGKILLed at random points over 50 runs of a mixed workflow (a dynamic
chain, a map whose elements fail once and are retried, a cached task hit by a second call): 30 on
the embedded SQLite store, 20 on Postgres with the relay publishing to a NATS server of the test's
own. Each run's first process (and sometimes its second) is killed when the execution's log
reaches a version drawn at random, then processes are started until the execution ends. The
draws come from a seeded generator: the seed is printed, and ``SLIPSTREAM_FAULT_SEED`` replays a run.

Afterwards every log is audited (tests/faults/_checks.py) and the stream read back from JetStream
must hold every committed event once per Msg-Id."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from engine._postgres_store import PostgresEventStore
from engine._sqlite_store import SqliteEventStore
from engine.events import AnyEvent, NodeCacheHit
from engine.interfaces import EventStore
from engine.state import ExecutionState
from tests.conftest import _admin as admin
from tests.conftest import run_blocking, with_database
from tests.engine.test_crash import read_log
from tests.plugins._stream import OwnNats, log_of, read_stream

from . import _workflows as wf
from ._checks import Audit, audit_log, audit_stream
from .conftest import ROOT, FaultSummary

SEED = int(os.environ.get("SLIPSTREAM_FAULT_SEED", "1204"))
SQLITE_LANES, SQLITE_RUNS = 3, 10  # lanes run side by side, each its runs one after the other
POSTGRES_LANES, POSTGRES_RUNS = 2, 10
EVENTS = 55  # about as many as a run of `mixed` writes (56 when its cached task misses twice)
STREAM, PREFIX = "SLIPSTREAM", "slipstream.events"  # the relay's defaults (Engine.connect(nats=...))


@dataclass
class Tally:
    runs: int = 0
    processes: int = 0
    kills: int = 0
    mid_execution: int = 0  # kills that found the execution launched and not yet ended


def log_target(target: str) -> str:
    """``target`` as tests/engine/test_crash.py's `read_log` names a log."""
    kind, _, where = target.partition(":")
    return f"sqlite:{Path(where) / 'events.db'}" if kind == "sqlite" else f"postgres:{where.split('@@')[0]}#public"


async def kill_at(process: subprocess.Popen[bytes], store: EventStore, execution_id: str, version: int) -> bool:
    """SIGKILL ``process`` as soon as the execution's log reaches ``version`` (polled every few
    milliseconds from here: the engine is by then a few steps further, wherever that is); False if
    the process ended first."""
    while process.poll() is None:
        if await store.current_version(execution_id) >= version:
            process.kill()
            return await anyio.to_thread.run_sync(process.wait) == -signal.SIGKILL
        await anyio.sleep(0.003)
    return False


async def drive(
    target: str, store: EventStore, execution_id: str, rng: random.Random, tally: Tally, logs: Path
) -> None:
    """One run: its first process (and, one time in two, its second) is SIGKILLed when the log
    reaches a version drawn at random (from the launch to the end, some 55 events); then processes
    are started until one sees the execution end."""
    kills = rng.choice((1, 2))
    argv = [sys.executable, "-m", "tests.faults._runner", target, execution_id]
    tally.runs += 1
    for number in range(kills + 3):
        stderr = logs / f"{execution_id}.{number}.stderr"
        with stderr.open("w") as err:
            spawn = functools.partial(subprocess.Popen, argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
            process = await anyio.to_thread.run_sync(spawn)
        tally.processes += 1
        assert process.stdout is not None
        if number < kills:
            reached = await store.current_version(execution_id)
            if await kill_at(process, store, execution_id, rng.randint(reached + 1, EVENTS)):
                process.stdout.close()
                tally.kills += 1
                events = await read_log(log_target(target), execution_id)
                tally.mid_execution += bool(events) and not ExecutionState.fold(events).is_terminal
                continue
        out, _ = await anyio.to_thread.run_sync(functools.partial(process.communicate, timeout=150))
        assert process.returncode == 0, f"{execution_id}: runner exited {process.returncode}:\n{stderr.read_text()}"
        assert out.decode().split()[-1] == str(wf.mixed_result(4)), out.decode()
        return
    raise AssertionError(f"{execution_id}: no process finished it")


async def lane(target: str, store: EventStore, name: str, runs: int, tally: Tally, logs: Path) -> list[str]:
    ids = []
    async with store:
        for run in range(runs):
            execution_id = f"kill-{name}-{run}"
            await drive(target, store, execution_id, random.Random(f"{SEED}:{execution_id}"), tally, logs)
            ids.append(execution_id)
    return ids


async def audit_store(store: EventStore, ids: list[str], audit: Audit) -> list[AnyEvent]:
    """Audit the executions ``ids``; the store's whole committed log."""
    async with store:
        for execution_id in ids:
            audit_log(audit, await store.read(execution_id), "succeeded")
        return [event for _, event in await log_of(store)]


@pytest.fixture
def lane_databases(postgres_dsn: str) -> Iterator[list[str]]:
    """A database per Postgres lane (each lane's engines share it, and its relay's cursor)."""
    names = [f"slipstream_kills_{uuid.uuid4().hex[:12]}" for _ in range(POSTGRES_LANES)]
    for name in names:
        run_blocking(admin(postgres_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield [with_database(postgres_dsn, name) for name in names]
    finally:
        for name in names:
            run_blocking(admin(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.timeout(420)
async def test_50_runs_sigkilled_at_random_moments(
    tmp_path: Path, lane_databases: list[str], own_nats: OwnNats, fault_summary: FaultSummary
) -> None:
    print(f"\nkill schedule seed {SEED} (SLIPSTREAM_FAULT_SEED={SEED} replays it)", flush=True)
    sqlite, postgres = Tally(), Tally()
    sqlite_targets = [f"sqlite:{tmp_path / f'lane-{i}'}" for i in range(SQLITE_LANES)]
    postgres_targets = [f"postgres:{dsn}@@{own_nats.url}" for dsn in lane_databases]
    lanes = [
        lane(t, SqliteEventStore(tmp_path / f"lane-{i}" / "events.db"), f"sqlite{i}", SQLITE_RUNS, sqlite, tmp_path)
        for i, t in enumerate(sqlite_targets)
    ]
    lanes += [
        lane(t, PostgresEventStore(dsn), f"pg{i}", POSTGRES_RUNS, postgres, tmp_path)
        for i, (t, dsn) in enumerate(zip(postgres_targets, lane_databases, strict=True))
    ]
    done = await asyncio.gather(*lanes)

    on_sqlite, on_postgres = Audit(), Audit()
    logs: dict[str, list[AnyEvent]] = {"SQLite": [], "Postgres + NATS relay": []}
    for i in range(SQLITE_LANES):
        logs["SQLite"] += await audit_store(SqliteEventStore(tmp_path / f"lane-{i}" / "events.db"), done[i], on_sqlite)
    for i, dsn in enumerate(lane_databases):
        logs["Postgres + NATS relay"] += await audit_store(PostgresEventStore(dsn), done[SQLITE_LANES + i], on_postgres)
    audit_stream(on_postgres, await read_stream(own_nats.url, STREAM, PREFIX), logs["Postgres + NATS relay"])

    for where, tally, audit in (("SQLite", sqlite, on_sqlite), ("Postgres + NATS relay", postgres, on_postgres)):
        hits = sum(isinstance(event, NodeCacheHit) for event in logs[where])
        fault_summary.record(
            f"engine SIGKILLed at random, {where}",
            tally.runs,
            audit,
            note=(
                f"{tally.kills} SIGKILLs ({tally.mid_execution} mid-execution), {tally.processes} engine processes, "
                f"{hits} cache hits, seed {SEED}"
            ),
        )
    assert not on_sqlite.problems, on_sqlite.problems
    assert not on_postgres.problems, on_postgres.problems
    assert sqlite.runs + postgres.runs == 50
    # a kill drawn past a run's last event never comes: not too many of those
    assert sqlite.kills + postgres.kills >= 50, "most processes ended before their kill: the test proves little"
    assert sqlite.mid_execution + postgres.mid_execution >= 45, "most kills missed the executions: it proves little"
