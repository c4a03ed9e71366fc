"""Runs `crashable` in an engine of its own process, for the crash tests.

    python -m tests.engine._crash_runner sqlite:PATH|postgres:DSN#SCHEMA launch|resume EXECUTION_ID [WORKFLOW]

``launch`` starts the execution with the given id (of ``WORKFLOW`` in ``_workflows``, default
``crashable``), ``resume`` only opens the engine (which resumes
unfinished executions); both wait for it and print its outputs. ``SLIPSTREAM_TEST_FAULT`` set to
``<point>:<n>`` SIGKILLs this process the n-th time a round reaches ``point``: ``before_append`` or
``after_append`` (of a round's events), ``after_submit``. The fault points are wrappers around the
store and the executor built here, so the engine's own code has no test hook.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from engine import Engine, TaskFailed
from engine.events import Event, ExecutionCreated
from engine.interfaces import EventStore, TaskRequest
from plugins.local import LocalExecutor
from tests.engine import _workflows as wf


class Fault:
    def __init__(self, spec: str) -> None:
        point, _, count = spec.partition(":")
        self.point = point
        self.remaining = int(count or "1") if spec else 0

    def at(self, point: str) -> None:
        if point == self.point and self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                os.kill(os.getpid(), 9)


def with_faults(store_cls: type[EventStore], fault: Fault) -> type[EventStore]:
    class FaultyStore(store_cls):  # type: ignore[valid-type,misc]
        async def append(self, execution_id: str, expected_version: int, events: Sequence[Event]) -> int:
            launch = bool(events) and isinstance(events[0], ExecutionCreated)  # not a round
            if not launch:
                fault.at("before_append")
            version = await super().append(execution_id, expected_version, events)
            if not launch:
                fault.at("after_append")
            return version

        async def append_many(self, batches: Sequence[tuple[str, int, Sequence[Event]]]) -> list[int]:
            fault.at("before_append")
            versions = await super().append_many(batches)
            fault.at("after_append")
            return versions

    return FaultyStore


def open_engine(target: str) -> Engine:
    fault = Fault(os.environ.get("SLIPSTREAM_TEST_FAULT", ""))
    kind, _, where = target.partition(":")
    store: Any
    if kind == "sqlite":
        from engine._sqlite_store import SqliteEventStore

        store = with_faults(SqliteEventStore, fault)(where)
    else:
        from engine._postgres_store import PostgresEventStore

        dsn, _, schema = where.partition("#")
        store = with_faults(PostgresEventStore, fault)(dsn, schema=schema or "public")

    class FaultyExecutor(LocalExecutor):
        async def submit(self, request: TaskRequest) -> str:
            handle = await super().submit(request)
            fault.at("after_submit")
            return handle

    return Engine(store, [FaultyExecutor()], retry_delay=0.05)


async def main(target: str, mode: str, execution_id: str, workflow: str = "crashable") -> None:
    async with open_engine(target) as engine:
        if mode == "launch":
            inputs = {"n": 6} if workflow == "crashable" else {}
            handle = await engine.launch(getattr(wf, workflow), execution_id=execution_id, **inputs)
        else:
            handle = engine.handle(execution_id)
        try:
            print(await handle.outputs(timeout=60), flush=True)
        except TaskFailed as exc:
            print(f"failed: {exc}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
