"""Workflows of ``python -m benchmarks agents`` (importable by module path, as agents load tasks)."""

from __future__ import annotations

from engine import map_task, task, workflow
from plugins.agents import agent


@task(executor="agents")
@agent("shell", command="true")
def shell_noop(i: int) -> None:
    """A shell job that does nothing: what the agent machinery costs on top of a process."""


@workflow
def one_job() -> None:
    shell_noop(i=0)


# every job of the map in flight at once, as the raw baseline starts every process at once
MAX_JOBS = 10_000


@workflow
def many_jobs(items: list[int]) -> None:
    map_task(shell_noop, concurrency=MAX_JOBS)(i=items)


@task
def local_noop(i: int) -> None:
    """The same map's element on the local executor: what the engine's map costs by itself."""


@workflow
def many_local(items: list[int]) -> None:
    map_task(local_noop, concurrency=MAX_JOBS)(i=items)
