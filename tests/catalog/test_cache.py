"""Memoization across executions (DESIGN section 9) on both backends: a hit records NodeCacheHit
with the artifact and skips the run; map elements and dynamic children are cached one by one;
cache_version, cache_ttl and eviction decide what is reused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine import Engine
from engine.events import ElementsReused, NodeCacheHit, NodeSucceeded
from tests.catalog import _workflows as wf
from tests.catalog.conftest import EngineFactory, flushed, runs


async def run(engine: Engine, workflow: object, **inputs: object) -> tuple[object, list[object]]:
    handle = await engine.launch(workflow, **inputs)  # type: ignore[arg-type]
    await handle.wait(timeout=60)
    return await handle.outputs(), await engine.history(handle.execution_id)


def hits(history: list[object]) -> list[NodeCacheHit]:
    return [e for e in history if isinstance(e, NodeCacheHit)]


async def test_a_second_execution_reuses_the_cached_output(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as engine:
        first, history1 = await run(engine, wf.square_wf, x=7, note="a")
        second, history2 = await run(engine, wf.square_wf, x=7, note="ignored input differs")
        third, _ = await run(engine, wf.square_wf, x=8)
        assert first == second == 49 and third == 64
        assert runs(side_effects, "slow_square") == ["7", "8"]
        assert not hits(history1)
        [hit] = hits(history2)
        assert hit.node_id == "slow_square" and hit.outputs
        await flushed(engine)
        artifact = await engine.catalog.get(hit.artifact)  # type: ignore[union-attr]
        assert artifact is not None and artifact.dataset.name.endswith("slow_square")
        produced = next(e for e in history1 if isinstance(e, NodeSucceeded) and e.node_id == "slow_square")
        assert (artifact.execution_id, artifact.node_id, artifact.attempt) == (
            produced.execution_id,
            "slow_square",
            1,
        )
    # a new engine on the same catalog (a new process) hits too
    async with make_engine() as engine:
        _, history = await run(engine, wf.square_wf, x=7)
        assert len(hits(history)) == 1 and runs(side_effects, "slow_square") == ["7", "8"]


async def test_a_rerun_map_computes_only_its_new_elements(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as engine:
        assert (await run(engine, wf.map_wf, xs=[1, 2, 3]))[0] == [2.0, 4.0, 6.0]
        out, history = await run(engine, wf.map_wf, xs=[1, 2, 3, 4])
        assert out == [2.0, 4.0, 6.0, 8.0]
        assert sorted(runs(side_effects, "scaled")) == ["1", "2", "3", "4"]  # 4 ran once, alone
        [reused] = [e for e in history if isinstance(e, ElementsReused)]
        assert reused.source == "cache" and sorted(r.index for r in reused.results) == [0, 1, 2]
        assert len(reused.artifacts) == 3 and len(set(reused.artifacts)) == 3
        # a broadcast input is part of every element's key
        out, _ = await run(engine, wf.map_wf, xs=[1, 2], factor=3.0)
        assert out == [3.0, 6.0] and len(runs(side_effects, "scaled")) == 6
        # fully cached: nothing runs, no chunk goes out
        out, history = await run(engine, wf.map_wf, xs=[4, 3, 2, 1])
        assert out == [8.0, 6.0, 4.0, 2.0] and len(runs(side_effects, "scaled")) == 6
        assert not [e for e in history if type(e).__name__ == "ChunkQueued"]


async def test_dynamic_children_are_cached(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as engine:
        assert (await run(engine, wf.dynamic_wf, n=3))[0] == 0 + 1 + 4
        out, history = await run(engine, wf.dynamic_wf, n=4)
        assert out == 0 + 1 + 4 + 9
        assert sorted(runs(side_effects, "slow_square")) == ["0", "1", "2", "3"]
        reused = [h.node_id for h in hits(history)]
        assert len(reused) == 3 and all(node.startswith("squares/slow_square") for node in reused)


async def test_bumping_cache_version_misses(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as engine:
        await run(engine, wf.versioned("1"), x=5)
        _, history = await run(engine, wf.versioned("1"), x=5)
        assert len(hits(history)) == 1
        _, history = await run(engine, wf.versioned("2"), x=5)
        assert not hits(history)
        assert runs(side_effects, "bumped") == ["1", "2"]


async def test_cached_outputs_expire_after_cache_ttl(make_engine: EngineFactory, side_effects: Path) -> None:
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    async with make_engine(clock=lambda: now[0]) as engine:
        await run(engine, wf.ttl_wf, x=1)
        now[0] += timedelta(minutes=59)
        assert len(hits((await run(engine, wf.ttl_wf, x=1))[1])) == 1
        now[0] += timedelta(minutes=2)  # the first output is now 61 minutes old
        assert not hits((await run(engine, wf.ttl_wf, x=1))[1])
        assert runs(side_effects, "dated") == ["1", "1"]


async def test_evicted_outputs_are_computed_again(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as engine:
        _, history = await run(engine, wf.square_wf, x=2)
        await flushed(engine)
        [artifact] = await engine.catalog.list_artifacts()  # type: ignore[union-attr]
        assert await engine.catalog.evict(artifact_id=artifact.id) == 1  # type: ignore[union-attr]
        _, history = await run(engine, wf.square_wf, x=2)
        assert not hits(history) and runs(side_effects, "slow_square") == ["2", "2"]
