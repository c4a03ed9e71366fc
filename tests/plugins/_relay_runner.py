"""A relay in a process of its own, for the tests that SIGKILL it: ``python -m
tests.plugins._relay_runner DSN SCHEMA NATS_URL STREAM PREFIX``.

Reads are slowed down (50 ms per page of 20 events, some 400 events/s) so that a test can kill it mid-stream.
"""

from __future__ import annotations

import asyncio
import sys

from engine._postgres_store import PostgresEventStore
from engine.interfaces import GlobalEvent, ServiceContext
from plugins.nats import NatsRelay


class SlowStore(PostgresEventStore):
    async def read_all(self, after_seq: int = 0, limit: int = 1000) -> list[GlobalEvent]:
        await asyncio.sleep(0.05)
        return await super().read_all(after_seq, limit)


async def main(dsn: str, schema: str, url: str, stream: str, prefix: str) -> None:
    store = SlowStore(dsn, schema=schema)
    await store.start()
    relay = NatsRelay(url, stream=stream, prefix=prefix, batch=20, window=8)
    await relay.start(ServiceContext(store=store, wake=lambda _: None, serving=True))
    print("relay started", flush=True)
    await relay.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
