"""Kill an engine process at chosen points of a round, restart it, and check the execution finishes
with an intact log and without re-running any task whose success was recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import NodeSucceeded
from engine.state import ExecutionState

from .conftest import runs
from .test_engine import assert_log_is_sane

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = 6 + sum(x + 1 for x in (10, 20, 30, 40))
# side-effect log name -> node of `crashable` that runs it
NODES = {f"step_{i}": "chain/step" + (f"-{i + 1}" if i else "") for i in range(6)} | {
    f"step_{x}": f"map_step/{i}" for i, x in enumerate((10, 20, 30, 40))
}


def run_engine(
    target: str, mode: str, execution_id: str, env: dict[str, str], workflow: str = "crashable"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.engine._crash_runner", target, mode, execution_id, workflow],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def read_log(target: str, execution_id: str) -> list:
    kind, _, where = target.partition(":")
    if kind == "sqlite":
        from engine._sqlite_store import SqliteEventStore

        store = SqliteEventStore(where)
    else:
        from engine._postgres_store import PostgresEventStore

        dsn, _, schema = where.partition("#")
        store = PostgresEventStore(dsn, schema=schema)
    async with store:
        return await store.read(execution_id)


@pytest.fixture
def target(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if store_kind == "sqlite":
        return f"sqlite:{tmp_path / 'events.db'}"
    dsn = request.getfixturevalue("postgres_database")
    return f"postgres:{dsn}#{request.getfixturevalue('postgres_schema')}"


@pytest.mark.parametrize(
    "fault",
    ["before_append:3", "after_append:1", "after_append:4", "after_append:9", "after_submit:2", "after_submit:7"],
)
async def test_killed_engine_finishes_after_restart(target: str, fault: str, side_effects: Path) -> None:
    env = {**os.environ, "SLIPSTREAM_TEST_FAULT": fault, "PYTHONPATH": str(ROOT)}
    crashed = run_engine(target, "launch", "crash-1", env)
    assert crashed.returncode == -9, f"the fault point was not reached:\n{crashed.stdout}\n{crashed.stderr}"

    before = await read_log(target, "crash-1")
    done_before = {e.node_id for e in before if isinstance(e, NodeSucceeded)}
    assert not ExecutionState.fold(before).is_terminal

    del env["SLIPSTREAM_TEST_FAULT"]
    resumed = run_engine(target, "resume", "crash-1", env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == str(EXPECTED)

    after = await read_log(target, "crash-1")
    assert_log_is_sane(after)  # consecutive versions, no duplicate NodeSucceeded
    assert after[: len(before)] == before  # the log only grew
    for name, node_id in NODES.items():
        assert runs(side_effects, name) >= 1, f"{node_id} never ran"
        if node_id in done_before:
            assert runs(side_effects, name) == 1, f"{node_id} had succeeded before the crash but ran again"


@pytest.mark.parametrize("workflow", ["process_killer", "process_killer_async"])
async def test_a_task_that_kills_its_process_fails_after_the_system_budget(
    target: str, workflow: str, side_effects: Path
) -> None:
    """The start is durable before the body runs, so each restart finds the attempt started and
    lost: a system failure on the node's budget (3 retries), not a crash loop."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SLIPSTREAM_TEST_FAULT", None)
    runs_seen = []
    result = run_engine(target, "launch", "killer-1", env, workflow)
    for _ in range(8):
        runs_seen.append(result.returncode)
        if result.returncode == 0:
            break
        assert result.returncode == 1, result.stderr  # the task's os._exit(1)
        result = run_engine(target, "resume", "killer-1", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("failed:"), result.stdout
    state = ExecutionState.fold(await read_log(target, "killer-1"))
    node_id = workflow.replace("process_killer", "kill_the_process")
    node = state.nodes[node_id]
    assert state.phase == "failed" and node.phase == "failed"
    assert node.system_failures == 4 and node.error is not None and "lost" in node.error.message
    assert runs_seen == [1, 1, 1, 1, 0]  # four deaths (the first run and three retries), then the end
