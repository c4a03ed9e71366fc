"""An engine in a process of its own, for the kill tests (which SIGKILL it at random moments):

    python -m tests.faults._runner sqlite:STATE_DIR|postgres:DSN[@@NATS_URL] EXECUTION_ID

It launches `mixed` under the given id unless the store holds that execution already (an earlier
process was killed after launching it), prints ``engine started`` once the engine runs (any
unfinished execution of the store is taken up), and prints the outputs once the execution ends.
With a NATS URL the engine runs the relay, and the process leaves only once the relay has
published everything the store holds (a process that is killed leaves that to the next one).
"""

from __future__ import annotations

import asyncio
import sys

import anyio

from engine import Engine, ExecutionNotFound
from plugins.nats import relay_cursor
from tests.faults import _workflows as wf


def open_engine(target: str) -> tuple[Engine, bool]:
    kind, _, where = target.partition(":")
    if kind == "sqlite":
        return Engine.embedded(where, retry_delay=0.05), False
    dsn, _, nats = where.partition("@@")
    return Engine.connect(postgres=dsn, nats=nats or None, executor="local", retry_delay=0.05), bool(nats)


async def relayed_everything(engine: Engine) -> None:
    """Until the relay's cursor is past every event of the store. `read_all` holds back events
    while a transaction that may commit a lower seq is open (anywhere on the server), so it is read
    until it gives the whole log, counted from the executions' versions."""
    page = await engine.store.list_executions(limit=1000)
    total = sum(summary.version for summary in page.items)
    while True:
        events = []
        while chunk := await engine.store.read_all(events[-1].seq if events else 0, 5000):
            events += chunk
        if len(events) >= total:
            break
        await anyio.sleep(0.05)
    while await engine.store.read_cursor(relay_cursor()) < events[-1].seq:  # noqa: ASYNC110 - the relay is a service
        await anyio.sleep(0.05)


async def main(target: str, execution_id: str) -> None:
    engine, relays = open_engine(target)
    async with engine:
        print("engine started", flush=True)
        try:
            await engine.get(execution_id)
            handle = engine.handle(execution_id)
        except ExecutionNotFound:
            handle = await engine.launch(wf.mixed, execution_id=execution_id, n=4)
        outputs = await handle.outputs(timeout=120)
        if relays:
            with anyio.fail_after(30):
                await relayed_everything(engine)
        print(outputs, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
