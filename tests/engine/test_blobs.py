"""Values above the inline limit live in the blob store: no event holds one, and every reader
(tasks, maps, outputs) sees the value itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec

from catalog import LocalBlobStore
from engine import Engine
from engine.events import AnyEvent, ChunkFinished, DynamicExpanded, ExecutionCreated, encode_event
from engine.literals import INLINE_LIMIT
from engine.models import Binding, DictBinding, ListBinding, LiteralBinding, WorkflowSpec

from . import _workflows as wf
from .conftest import EngineFactory


def spec_literals(spec: WorkflowSpec) -> list[bytes]:
    def walk(binding: Binding) -> list[bytes]:
        match binding:
            case LiteralBinding(value=value):
                return [value]
            case ListBinding(items=items):
                return [x for item in items for x in walk(item)]
            case DictBinding(items=items):
                return [x for item in items.values() for x in walk(item)]
        return []

    found = [x for node in spec.nodes for b in node.inputs.values() for x in walk(b)]
    found += list(spec.defaults.values())
    for sub in spec.subworkflows.values():
        found += spec_literals(sub)
    return found


def literals_in(event: AnyEvent) -> list[bytes]:
    """Every value an event holds."""
    found: list[bytes] = []
    for name in ("inputs", "outputs"):
        found += list(getattr(event, name, {}).values())
    if isinstance(event, ChunkFinished):
        found += [r.output for r in event.results if r.output is not None]
    if isinstance(event, ExecutionCreated | DynamicExpanded):
        found += spec_literals(event.spec)
    return found


async def test_no_event_holds_a_value_above_the_limit(eng: Engine) -> None:
    xs = list(range(30_000))  # ~90 KB as a literal: a manifest of chunk blobs
    handle = await eng.launch(wf.large_values, n=200_000, xs=xs)
    length, echoed, mapped = await handle.outputs(timeout=60)
    assert length == 200_000
    assert echoed == mapped == [x + 1 for x in xs]
    history = await eng.history(handle.execution_id)
    for event in history:
        for literal in literals_in(event):
            assert len(literal) <= INLINE_LIMIT, f"{type(event).__name__} {event.node_id} holds {len(literal)} bytes"
    largest = max(len(encode_event(event)) for event in history)
    assert largest < 4 * INLINE_LIMIT  # chunks of small results stay small too


async def test_a_value_just_under_the_limit_stays_inline(eng: Engine) -> None:
    handle = await eng.launch(wf.large_values, n=1_000, xs=[1, 2, 3])
    assert await handle.outputs(timeout=30) == (1_000, [2, 3, 4], [2, 3, 4])
    created = (await eng.history(handle.execution_id))[0]
    assert isinstance(created, ExecutionCreated)
    assert msgspec.msgpack.decode(created.inputs["xs"]) == [1, 2, 3]  # small: inline, as before


class CountingBlobs(LocalBlobStore):
    """A local blob store that counts reads and writes by address."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: Counter[str] = Counter()
        self.puts: Counter[str] = Counter()

    async def get(self, address: str) -> bytes:
        self.gets[address] += 1
        return await super().get(address)

    async def put(self, data: bytes) -> str:
        address = await super().put(data)
        self.puts[address] += 1
        return address


async def test_each_blob_is_read_once_however_many_chunks_point_into_it(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    """A 30k-element map reads its input's manifest chunks once across all its chunk jobs, and the
    task downstream of it reads the map's output once (not once per element)."""
    blobs = CountingBlobs(tmp_path / "counted")
    async with make_engine(blobs=blobs) as eng:
        xs = list(range(30_000))
        handle = await eng.launch(wf.large_values, n=10, xs=xs)
        _length, echoed, _mapped = await handle.outputs(timeout=60)
    assert echoed == [x + 1 for x in xs]
    assert blobs.gets, "the map's input should have been a manifest in the blob store"
    # outputs() reads the result once more; nothing else reads a blob twice
    assert max(blobs.gets.values()) <= 2, blobs.gets.most_common(3)


async def test_an_fsspec_blob_store_serves_a_whole_execution(tmp_path: Path) -> None:
    async with Engine.embedded(state_dir=tmp_path, blobs="memory://slipstream-test-engine") as eng:
        xs = list(range(30_000))
        handle = await eng.launch(wf.large_values, n=200_000, xs=xs)
        length, echoed, _mapped = await handle.outputs(timeout=60)
    assert (length, echoed) == (200_000, [x + 1 for x in xs])
    assert not (tmp_path / "blobs").exists() or not any((tmp_path / "blobs").iterdir())
