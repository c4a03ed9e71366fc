"""Kill an engine process while an agent's job runs, before and after its handle is recorded, start
another process on the same store, and check the job is created once and its result recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest

from engine._postgres_store import PostgresEventStore
from engine._sqlite_store import SqliteEventStore
from engine.interfaces import EventStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'events.db'}"
    dsn = request.getfixturevalue("postgres_database")
    return f"postgres:{dsn}#{request.getfixturevalue('postgres_schema')}"


def run_engine(target: str, jobs: Path, mode: str, execution_id: str, log: Path, gate: Path, fault: str = "") -> str:
    env = {**os.environ, "SLIPSTREAM_TEST_FAULT": fault}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.plugins._agent_crash_runner",
            target,
            str(jobs),
            mode,
            execution_id,
            str(log),
            str(gate),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if fault:
        assert done.returncode == -9, f"the fault did not fire: {done.stdout}{done.stderr}"
    else:
        assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def store_for(target: str) -> EventStore:
    kind, _, where = target.partition(":")
    if kind == "sqlite":
        return SqliteEventStore(where)
    dsn, _, schema = where.partition("#")
    return PostgresEventStore(dsn, schema=schema)


@pytest.mark.parametrize("fault", ["after_create", "after_running"])
async def test_a_killed_engine_leaves_the_job_running_and_the_next_one_finishes_it(
    target: str, fault: str, tmp_path: Path
) -> None:
    jobs, log, gate = tmp_path / "jobs", tmp_path / "pids.log", tmp_path / "gate"
    execution_id = f"crash-{uuid.uuid4().hex[:8]}"
    await anyio.to_thread.run_sync(run_engine, target, jobs, "launch", execution_id, log, gate, fault)
    with anyio.fail_after(15):  # the job runs on, the engine is gone
        while not (log.exists() and log.read_text().split()):  # noqa: ASYNC110 - a file the job writes
            await anyio.sleep(0.02)
    pids = log.read_text().split()
    assert len(pids) == 1 and len(list(jobs.iterdir())) == 1
    gate.touch()
    output = await anyio.to_thread.run_sync(run_engine, target, jobs, "resume", execution_id, log, gate)
    assert output == "done"
    assert log.read_text().split() == pids  # created exactly once
    async with store_for(target) as store:
        kinds = [type(e).__name__ for e in await store.read(execution_id)]
    assert kinds.count("NodeQueued") == 1 and kinds.count("NodeRunning") == 1 and kinds[-1] == "ExecutionSucceeded"
