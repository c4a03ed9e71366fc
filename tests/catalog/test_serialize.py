"""cache_serialize on both backends: of several executions needing one key at once, one computes and
the others wait, then hit; a reservation whose owner died is taken over once it lapses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio

from engine._literals import to_literal
from engine.events import NodeCacheHit
from engine.interfaces import CacheKey
from engine.literals import inputs_hash
from tests.catalog import _workflows as wf
from tests.catalog.conftest import EngineFactory, flushed, runs


async def test_five_concurrent_executions_compute_a_key_once(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as engine:
        handles = [await engine.launch(wf.serialized_wf, x=1) for _ in range(5)]
        outputs = []
        for handle in handles:
            await handle.wait(timeout=60)
            outputs.append(await handle.outputs())
        assert outputs == [101] * 5
        assert runs(side_effects, "expensive") == ["1"]
        hit_counts = []
        for handle in handles:
            history = await engine.history(handle.execution_id)
            hit_counts.append(sum(isinstance(e, NodeCacheHit) for e in history))
        assert sorted(hit_counts) == [0, 1, 1, 1, 1]


async def test_two_engines_on_one_catalog_compute_a_key_once(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as first, make_engine() as second:
        handles = [await engine.launch(wf.serialized_wf, x=2) for engine in (first, second, first, second)]
        for handle in handles:
            await handle.wait(timeout=60)
        assert runs(side_effects, "expensive") == ["2"]


async def test_a_lapsed_reservation_is_taken_over(make_engine: EngineFactory, side_effects: Path) -> None:
    task = wf.expensive
    key = CacheKey(
        "default",
        "development",
        f"{task.ref.module}.{task.ref.qualname}",
        "1",
        task.options.cache_interface,
        inputs_hash({"x": to_literal(3, int)}),
    )
    async with make_engine(reservation_ttl=0.6) as engine:
        catalog = engine.catalog
        assert catalog is not None
        # a process that reserved the key and died: nobody renews its reservation
        held = await catalog.reserve(key.digest, "crashed/expensive", now=datetime.now(UTC), ttl=1.0)
        assert held.owner == "crashed/expensive"
        handle = await engine.launch(wf.serialized_wf, x=3)
        with anyio.fail_after(30):
            await handle.wait()
        assert await handle.outputs() == 103
        assert runs(side_effects, "expensive") == ["3"]
        # the owner released its reservation once its outputs were in the catalog: the key is free
        await flushed(engine)
        free = await catalog.reserve(key.digest, "probe", now=datetime.now(UTC), ttl=1.0)
        assert free.owner == "probe"


async def test_heartbeats_keep_a_long_computation_reserved(make_engine: EngineFactory, side_effects: Path) -> None:
    # the reservation lasts 0.15 s and the body 0.4 s: without heartbeats the waiters would take it over
    async with make_engine(reservation_ttl=0.15) as engine:
        handles = [await engine.launch(wf.serialized_wf, x=4) for _ in range(3)]
        for handle in handles:
            await handle.wait(timeout=60)
        assert runs(side_effects, "expensive") == ["4"]
