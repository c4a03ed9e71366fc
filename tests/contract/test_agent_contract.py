"""The `Agent` contract (engine/interfaces.py), run against every agent backend.

A backend joins with one line in `BACKENDS`: how to build an instance over some shared storage
(two instances over one storage stand for an engine and the one that restarted after it), and the
settings and inputs of a job that succeeds, one that keeps running, and (if the agent can fail)
one that fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.interfaces import Agent, AgentJob, AgentJobStatus, TaskKey
from plugins.agents import FileSensor, ShellAgent


@dataclass(frozen=True)
class Backend:
    """One agent under test.

    Attributes:
        name: the test id.
        make: a fresh, unstarted agent keeping its jobs under the given directory.
        succeeds: ``(config, inputs, value)`` of a job that succeeds with ``value``.
        runs: ``(config, inputs)`` of a job that runs until deleted.
        fails: ``(config, inputs)`` of a job that fails, or None if the agent cannot fail.
    """

    name: str
    make: Callable[[Path], Agent]
    succeeds: Callable[[Path], tuple[dict[str, Any], dict[str, Any], Any]]
    runs: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]
    fails: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]] | None = None


def _existing(tmp: Path) -> tuple[dict[str, Any], dict[str, Any], Any]:
    (tmp / "there").write_text("x")
    return {}, {"path": str(tmp / "there")}, str(tmp / "there")


BACKENDS = [
    Backend(
        "shell",
        lambda d: ShellAgent(d, kill_grace=2.0, poll_interval=0.02),
        succeeds=lambda tmp: ({"command": "echo {word}"}, {"word": "hi"}, "hi"),
        runs=lambda tmp: ({"command": "sleep 60"}, {}),
        fails=lambda tmp: ({"command": "echo broken >&2; exit 2"}, {}),
    ),
    Backend(
        "file_sensor",
        lambda d: FileSensor(d, poll_interval=0.02),
        succeeds=_existing,
        runs=lambda tmp: ({}, {"path": str(tmp / "never")}),
    ),
]


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
async def agents(backend: Backend, tmp_path: Path) -> AsyncIterator[tuple[Agent, Agent]]:
    """Two started instances over one storage: the first engine's and the restarted one's."""
    first, second = backend.make(tmp_path / "jobs"), backend.make(tmp_path / "jobs")
    await first.start()
    await second.start()
    yield first, second
    await first.close()
    await second.close()


def job(attempt: int, config: dict[str, Any], inputs: dict[str, Any]) -> AgentJob:
    return AgentJob(key=TaskKey("exec", "node", attempt), task="contract", config=config, inputs=inputs)


async def settled(agent: Agent, job_id: str) -> AgentJobStatus:
    with anyio.fail_after(15):
        while (status := await agent.get(job_id)).phase == "running":  # noqa: ASYNC110 - polling is the contract
            await anyio.sleep(0.02)
    return status


async def test_a_job_succeeds_with_its_value(backend: Backend, agents: tuple[Agent, Agent], tmp_path: Path) -> None:
    config, inputs, value = backend.succeeds(tmp_path)
    job_id = await agents[0].create(job(1, config, inputs))
    assert isinstance(job_id, str) and job_id
    status = await settled(agents[0], job_id)
    assert status.phase == "succeeded" and status.value == value


async def test_create_is_idempotent_per_attempt_across_instances(
    backend: Backend, agents: tuple[Agent, Agent], tmp_path: Path
) -> None:
    config, inputs = backend.runs(tmp_path)
    first = await agents[0].create(job(1, config, inputs))
    assert await agents[0].create(job(1, config, inputs)) == first
    assert await agents[1].create(job(1, config, inputs)) == first
    other = await agents[0].create(job(2, config, inputs))
    assert other != first  # another attempt is another job
    for job_id in (first, other):
        await agents[0].delete(job_id)


async def test_another_instance_finds_gets_and_deletes_the_job(
    backend: Backend, agents: tuple[Agent, Agent], tmp_path: Path
) -> None:
    config, inputs = backend.runs(tmp_path)
    job_id = await agents[0].create(job(1, config, inputs))
    await agents[0].close()  # close leaves the job running
    assert (await agents[1].get(job_id)).phase == "running"
    await agents[1].delete(job_id)
    assert (await agents[1].get(job_id)).phase == "lost"
    assert (await agents[0].get(job_id)).phase == "lost"


async def test_unknown_ids_are_lost_and_deleting_them_is_a_no_op(agents: tuple[Agent, Agent]) -> None:
    for job_id in ("no-such-job", "", "../../etc", "/etc/passwd", "a/b"):
        assert (await agents[0].get(job_id)).phase == "lost"
        await agents[0].delete(job_id)


async def test_delete_stops_the_job_and_is_idempotent(
    backend: Backend, agents: tuple[Agent, Agent], tmp_path: Path
) -> None:
    config, inputs = backend.runs(tmp_path)
    job_id = await agents[0].create(job(1, config, inputs))
    assert (await agents[0].get(job_id)).phase == "running"
    await agents[0].delete(job_id)
    await agents[0].delete(job_id)
    assert (await agents[0].get(job_id)).phase == "lost"


FAILING = [b for b in BACKENDS if b.fails is not None]


@pytest.mark.parametrize("failing", FAILING, ids=[b.name for b in FAILING])
async def test_a_failing_job_says_why(failing: Backend, tmp_path: Path) -> None:
    assert failing.fails is not None
    config, inputs = failing.fails(tmp_path)
    agent = failing.make(tmp_path / "jobs")
    await agent.start()
    job_id = await agent.create(job(1, config, inputs))
    status = await settled(agent, job_id)
    assert status.phase == "failed" and status.message
    await agent.delete(job_id)
    await agent.close()
