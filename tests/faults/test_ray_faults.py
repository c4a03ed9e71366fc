"""A Ray actor killed (``ray.kill``) while it runs an attempt: the attempt fails as a system error,
is retried on a fresh actor, and the execution succeeds with its log intact. In-process Ray with
logical resources (tests/plugins/ray/_session.py), as the Ray executor's own tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from engine import Engine
from engine.events import NodeFailed, NodeRunning
from plugins.ray import RayExecutor
from tests.contract._probe import Probe
from tests.plugins.ray import _tasks
from tests.plugins.ray._session import ensure_ray, ray_session
from tests.plugins.ray.test_ray_executor import arrivals

from ._checks import Audit, audit_log
from .conftest import FaultSummary


@pytest.fixture(scope="module", autouse=True)
def _ray() -> Iterator[None]:
    yield from ray_session()


async def started(eng: Engine, execution_id: str) -> NodeRunning:
    """The attempt's recorded start (polled: the loop writes it in a round of its own)."""
    with anyio.fail_after(30):
        while True:
            for event in await eng.history(execution_id):
                if isinstance(event, NodeRunning):
                    return event
            await anyio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_a_ray_actor_killed_mid_task_is_retried_and_the_execution_succeeds(
    tmp_path: Path, fault_summary: FaultSummary
) -> None:
    import ray

    ensure_ray()
    probe = Probe()
    await probe.start()
    executor = RayExecutor()
    try:
        async with Engine.embedded(tmp_path, executors=[executor], executor="ray", retry_delay=0.05) as eng:
            handle = await eng.launch(_tasks.killed_once, probe=probe.address)
            (held,) = await arrivals(probe, 1)  # the first attempt runs, and holds
            running = await started(eng, handle.execution_id)
            found = re.match(r"ray:([^\[]+)\[pid (\d+)", running.worker)  # the actor's name and pid
            assert found is not None and found.group(2) == held.split("@")[1], (running.worker, held)
            actor = await anyio.to_thread.run_sync(lambda: ray.get_actor(found.group(1), namespace=executor.namespace))
            await anyio.to_thread.run_sync(lambda: ray.kill(actor, no_restart=True))
            where = await handle.outputs(timeout=60)
            history = await eng.history(handle.execution_id)
    finally:
        await probe.close()
    audit = Audit()
    audit_log(audit, history, "succeeded")
    failures = [e for e in history if isinstance(e, NodeFailed)]
    died = sum(failure.error.kind == "system" and "died" in failure.error.message for failure in failures)
    fault_summary.record(
        "Ray actor killed mid-task",
        1,
        audit,
        note=f"{len(failures)} system failure ({died} saying the actor died), retried on a fresh actor",
    )
    assert not audit.problems, audit.problems
    assert int(where[0]) != int(found.group(2))  # a fresh actor ran the retry
    assert len(failures) == 1 and failures[0].error.kind == "system" and "died" in failures[0].error.message
