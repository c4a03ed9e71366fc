"""Runs the `gated` agent workflow in an engine of its own process, for tests/plugins/test_agents_crash.py.

    python -m tests.plugins._agent_crash_runner sqlite:PATH|postgres:DSN#SCHEMA JOBS launch|resume EXECUTION_ID LOG GATE

``launch`` starts the execution with the given id, ``resume`` only opens the engine (which resumes
unfinished executions); both wait for it and print its outputs. ``SLIPSTREAM_TEST_FAULT`` SIGKILLs
this process at ``after_create`` (the agent created the job; its handle is not recorded yet) or
``after_running`` (``NodeRunning`` with the job's handle was appended). The fault points wrap the
store and the agent built here; the engine and the executor have no test hook.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from engine import Engine, TaskFailed
from engine.events import Event, NodeRunning
from engine.interfaces import AgentJob, EventStore
from plugins.agents import AgentExecutor, ShellAgent
from plugins.local import LocalExecutor
from tests.plugins import _agent_tasks as wf


def _die() -> None:
    os.kill(os.getpid(), 9)


def open_engine(target: str, jobs: str) -> Engine:
    fault = os.environ.get("SLIPSTREAM_TEST_FAULT", "")
    kind, _, where = target.partition(":")
    base: Any
    if kind == "sqlite":
        from engine._sqlite_store import SqliteEventStore

        base, args, kwargs = SqliteEventStore, (where,), {}
    else:
        from engine._postgres_store import PostgresEventStore

        dsn, _, schema = where.partition("#")
        base, args, kwargs = PostgresEventStore, (dsn,), {"schema": schema or "public"}

    class FaultyStore(base):  # type: ignore[valid-type,misc]
        async def append(self, execution_id: str, expected_version: int, events: Sequence[Event]) -> int:
            version = await super().append(execution_id, expected_version, events)
            if fault == "after_running" and any(isinstance(e, NodeRunning) for e in events):
                _die()
            return version

        async def append_many(self, batches: Sequence[tuple[str, int, Sequence[Event]]]) -> list[int]:
            versions = await super().append_many(batches)
            if fault == "after_running" and any(isinstance(e, NodeRunning) for _, _, evs in batches for e in evs):
                _die()
            return versions

    class FaultyShell(ShellAgent):
        async def create(self, job: AgentJob) -> str:
            job_id = await super().create(job)
            if fault == "after_create":
                _die()
            return job_id

    store: EventStore = FaultyStore(*args, **kwargs)
    agents = AgentExecutor([FaultyShell(jobs)], poll_interval=0.05)
    return Engine(store, {"local": LocalExecutor(), "agents": agents}, retry_delay=0.05)  # type: ignore[arg-type]


async def main(target: str, jobs: str, mode: str, execution_id: str, log: str, gate: str) -> None:
    async with open_engine(target, jobs) as engine:
        if mode == "launch":
            handle = await engine.launch(wf.gated, execution_id=execution_id, log=log, gate=gate)
        else:
            handle = engine.handle(execution_id)
        try:
            print(await handle.outputs(timeout=60), flush=True)
        except TaskFailed as exc:
            print(f"failed: {exc}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
