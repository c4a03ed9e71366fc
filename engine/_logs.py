"""Reading attempts' logs back: from the blob addresses their final events record, and, for attempts
still running, from their live capture (in this process) or the files they mirror it to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from engine._capture import live_logs, read_live_files
from engine.errors import ExecutionNotFound
from engine.events import AnyEvent, ChunkFinished, NodeFailed, NodeSucceeded
from engine.interfaces import TERMINAL_STATUSES, BlobStore, EventStore

__all__ = ["AttemptLogs", "read_logs"]


@dataclass(frozen=True)
class AttemptLogs:
    """What one attempt of a node (or map element ``<map>/<index>``) printed and logged.

    ``text`` is whole for a finished attempt; for one still running (``running``), it is what was
    written since the previous `AttemptLogs` of the same attempt.
    """

    node_id: str
    attempt: int
    text: str
    running: bool = False


def _recorded(events: Iterable[AnyEvent]) -> Iterable[tuple[str, int, str]]:
    """(node id, attempt, blob address) of every attempt whose final event holds logs."""
    for event in events:
        if isinstance(event, NodeSucceeded | NodeFailed) and event.logs:
            yield event.node_id, event.attempt, event.logs
        elif isinstance(event, ChunkFinished):
            parent = event.node_id.rpartition("/")[0]
            for result in event.results:
                if result.logs:
                    yield f"{parent}/{result.index}", result.attempt, result.logs


def _wanted(node_id: str, attempt: int, node: str | None, only_attempt: int | None) -> bool:
    if only_attempt is not None and attempt != only_attempt:
        return False
    return node is None or node_id == node or node_id.startswith(f"{node}/")


async def read_logs(
    store: EventStore,
    blobs: BlobStore | None,
    execution_id: str,
    node_id: str | None = None,
    *,
    attempt: int | None = None,
    follow: bool = False,
    interval: float = 0.2,
    live_dir: Path | None = None,
    visible: Callable[[AnyEvent], bool] = lambda first: True,
) -> AsyncIterator[AttemptLogs]:
    """The logs of an execution's attempts (of one node and its children, or one attempt), in the
    order they ended; with ``follow``, also lines of running attempts as they are written (those
    of this process, and those mirrored under ``live_dir``), until the execution ends. An
    execution whose first event ``visible`` rejects (another project's) is not found."""
    events = await store.read(execution_id)
    if not events or not visible(events[0]):  # another project's: not found, as if it did not exist
        raise ExecutionNotFound(execution_id)
    version = 0
    live_seen: dict[str, int] = {}  # label -> characters already yielded
    while True:
        for node, number, address in _recorded(events):
            if _wanted(node, number, node_id, attempt) and blobs is not None:
                text = (await blobs.get(address)).decode(errors="replace")
                label = f"{execution_id} {node}#{number}"
                yield AttemptLogs(node, number, text[live_seen.pop(label, 0) :] if label in live_seen else text)
        version = events[-1].version if events else version
        if not follow:
            return
        running: dict[tuple[str, int], str] = {}
        if live_dir is not None:
            running.update(await anyio.to_thread.run_sync(read_live_files, live_dir, execution_id))
        for label, log in live_logs().items():  # this process's: never behind its own file
            owner, _, rest = label.partition(" ")
            node, _, number = rest.rpartition("#")
            if owner == execution_id:
                running[(node, int(number))] = log.text()
        for (node, number), text in running.items():
            label = f"{execution_id} {node}#{number}"
            if _wanted(node, number, node_id, attempt) and len(text) > live_seen.get(label, 0):
                yield AttemptLogs(node, number, text[live_seen.get(label, 0) :], running=True)
                live_seen[label] = len(text)
        summary = await store.get_summary(execution_id)
        if summary is not None and summary.status in TERMINAL_STATUSES and not events:
            return
        await anyio.sleep(interval)
        events = await store.read(execution_id, after=version)
