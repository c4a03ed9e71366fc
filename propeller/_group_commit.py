"""Group commit: appends of concurrent rounds share one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from engine.errors import ConcurrencyConflict, StoreUnavailable
from engine.events import Event
from engine.interfaces import EventStore

__all__ = ["GroupCommit"]


class GroupCommit:
    """Appends of concurrent rounds that arrive while a write is in flight go out in one transaction.

    A lone round is written at once (no added latency); under load, rounds of many executions share
    a commit. If a batch hits a conflict, its appends are retried one by one so that only the
    execution that lost the race sees ``ConcurrencyConflict``.
    """

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._pending: list[tuple[str, int, Sequence[Event], asyncio.Future[None]]] = []
        self._writing = False

    async def append(self, execution_id: str, expected_version: int, events: Sequence[Event]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((execution_id, expected_version, events, future))
        if not self._writing:
            self._writing = True
            batch: list[tuple[str, int, Sequence[Event], asyncio.Future[None]]] = []
            try:
                while self._pending:
                    batch, self._pending = self._pending, []
                    await self._write(batch)
            except BaseException as exc:
                # this round was cancelled while writing for others: nobody else will, so fail them
                for *_, waiting in batch + self._pending:
                    if not waiting.done() and waiting is not future:
                        waiting.set_exception(StoreUnavailable(f"append abandoned: {exc!r}"))
                self._pending = []
                raise
            finally:
                self._writing = False
        await future

    async def _write(self, batch: list[tuple[str, int, Sequence[Event], asyncio.Future[None]]]) -> None:
        # a round cancelled while its append is in a batch (at shutdown) has given its answer up:
        # the others' answers must still go out
        if len(batch) == 1:
            execution_id, expected, events, future = batch[0]
            try:
                await self._store.append(execution_id, expected, events)
            except BaseException as exc:  # handed to the waiting round, which decides
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(None)
            return
        try:
            await self._store.append_many([(eid, expected, events) for eid, expected, events, _ in batch])
        except ConcurrencyConflict:
            for item in batch:
                await self._write([item])
            return
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for *_, future in batch:
            if not future.done():
                future.set_result(None)
