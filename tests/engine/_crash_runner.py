"""Runs `crashable` in an engine of its own process, for the crash tests.

    python -m tests.engine._crash_runner sqlite:PATH|postgres:DSN#SCHEMA launch|resume EXECUTION_ID

``launch`` starts the execution with the given id, ``resume`` only opens the engine (which resumes
unfinished executions); both wait for it and print its outputs. ``SLIPSTREAM_TEST_FAULT`` makes the
control loop SIGKILL this process at a chosen point.
"""

from __future__ import annotations

import asyncio
import sys

from engine import Engine
from plugins.local import LocalExecutor
from tests.engine import _workflows as wf


def open_engine(target: str) -> Engine:
    kind, _, where = target.partition(":")
    if kind == "sqlite":
        from engine._sqlite_store import SqliteEventStore

        store = SqliteEventStore(where)
    else:
        from engine._postgres_store import PostgresEventStore

        dsn, _, schema = where.partition("#")
        store = PostgresEventStore(dsn, schema=schema or "public")
    return Engine(store, {"local": LocalExecutor()}, retry_delay=0.05)


async def main(target: str, mode: str, execution_id: str) -> None:
    async with open_engine(target) as engine:
        if mode == "launch":
            handle = await engine.launch(wf.crashable, execution_id=execution_id, n=6)
        else:
            handle = engine.handle(execution_id)
        print(await handle.outputs(timeout=60), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
