"""Tasks that take their process down: one that runs out of memory under a real address-space
limit, one that segfaults, one that calls ``os._exit``, in the local executor's process workers; and
``os._exit`` in the engine's own process (the test_crash runner), restarted until it gives up.

Each is a system error, retried on the system budget (three retries), after which the execution
fails with an error that says what happened; the log stays whole."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine import Engine, TaskFailed
from engine.state import ExecutionState
from plugins.local import LocalExecutor
from tests.engine.test_crash import ROOT, read_log, run_engine

from . import _workflows as wf
from ._checks import Audit, audit_log
from .conftest import FaultSummary

SYSTEM_RETRIES = 3  # engine.models.DEFAULT_SYSTEM_RETRIES
DIED = "died while running the attempt "


@pytest.fixture
async def process_engine(tmp_path: Path) -> AsyncIterator[Engine]:
    executor = LocalExecutor(mode="process", max_workers=2)
    async with Engine.embedded(tmp_path, executors=[executor], retry_delay=0.05) as eng:
        yield eng


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("fault", "workflow", "node", "says"),
    [
        ("task out of memory", wf.out_of_memory, "exhaust_memory", "ran out of memory (MemoryError"),
        ("task segfault", wf.segfaulting, "segfault", DIED + "(killed by signal SIGSEGV)"),
        ("task os._exit in a process worker", wf.exiting, "exit_at_once", DIED + "(exit code 3)"),
    ],
)
async def test_a_task_that_takes_its_process_down_fails_after_the_system_budget(
    process_engine: Engine, fault_summary: FaultSummary, fault: str, workflow: object, node: str, says: str
) -> None:
    handle = await process_engine.launch(workflow)  # type: ignore[arg-type]
    with pytest.raises(TaskFailed) as failed:
        await handle.outputs(timeout=60)
    assert failed.value.node_id == node and f"failed at node {node!r} (system error)" in str(failed.value)
    audit = Audit()
    state = audit_log(audit, await process_engine.history(handle.execution_id), "failed")
    fault_summary.record(fault, 1, audit, note=f"attempts {SYSTEM_RETRIES + 1}, all system errors")
    assert not audit.problems, audit.problems
    assert state is not None
    failures = state.nodes[node]
    assert (failures.system_failures, failures.user_failures) == (SYSTEM_RETRIES + 1, 0)
    assert failures.error is not None and failures.error.kind == "system" and says in failures.error.message


@pytest.mark.timeout(90)
async def test_os_exit_in_the_engines_own_process(tmp_path: Path, fault_summary: FaultSummary) -> None:
    """A thread task's ``os._exit`` ends the engine; each restart finds the attempt started and
    lost (tests/engine/test_crash.py asserts the details; here the log is audited)."""
    target = f"sqlite:{tmp_path / 'events.db'}"
    env = {k: v for k, v in os.environ.items() if k != "SLIPSTREAM_TEST_FAULT"} | {"PYTHONPATH": str(ROOT)}
    result = run_engine(target, "launch", "exit-1", env, "process_killer")
    processes = 1
    while result.returncode == 1 and processes < SYSTEM_RETRIES + 3:
        result = run_engine(target, "resume", "exit-1", env)
        processes += 1
    assert result.returncode == 0 and result.stdout.startswith("failed:"), result.stderr
    audit = Audit()
    state = audit_log(audit, await read_log(target, "exit-1"), "failed")
    fault_summary.record("task os._exit in the engine process", processes, audit, note="one engine process per attempt")
    assert not audit.problems, audit.problems
    assert isinstance(state, ExecutionState) and state.nodes["kill_the_process"].system_failures == SYSTEM_RETRIES + 1
