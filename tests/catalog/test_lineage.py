"""Lineage on both backends: each node run's consumed and produced artifacts, walked as a graph."""

from __future__ import annotations

import pytest

from engine.events import NodeCacheHit
from tests.catalog import _workflows as wf
from tests.catalog.conftest import EngineFactory, flushed


async def test_lineage_walks_upstream_and_downstream(make_engine: EngineFactory) -> None:
    async with make_engine() as engine:
        catalog = engine.catalog
        assert catalog is not None
        handle = await engine.launch(wf.pipeline_wf, n=4)
        await handle.wait(timeout=60)
        await flushed(engine)
        by_node = {a.node_id: a for a in await catalog.list_artifacts()}
        assert sorted(by_node) == ["featurize", "fit", "load"]  # count is not cached
        load, featurize, fit = by_node["load"], by_node["featurize"], by_node["fit"]

        up = await catalog.lineage(fit.id, direction="upstream")
        assert up.depths == {fit.id: 0, featurize.id: 1, load.id: 2}
        assert {(link.source, link.target, link.node_id) for link in up.links} == {
            (featurize.id, fit.id, "fit"),
            (load.id, featurize.id, "featurize"),
        }
        assert (await catalog.lineage(fit.id, depth=1)).depths == {fit.id: 0, featurize.id: 1}

        down = await catalog.lineage(load.id, direction="downstream")
        assert down.depths == {load.id: 0, featurize.id: 1, fit.id: 2}
        # count is not cached: its run records what it consumed, though it produced no artifact
        consumed = await catalog.edges(execution_id=handle.execution_id, node_id="count")
        assert [(e.artifact, e.direction) for e in consumed] == [(load.id, "in")]

        # a rerun reuses all three: the graph is unchanged, and a hit is consumed like a run's output
        again = await engine.launch(wf.pipeline_wf, n=4)
        await again.wait(timeout=60)
        await flushed(engine)
        assert sum(isinstance(e, NodeCacheHit) for e in await engine.history(again.execution_id)) == 3
        assert (await catalog.lineage(fit.id)).depths == up.depths
        rerun_count = await catalog.edges(execution_id=again.execution_id, node_id="count")
        assert [e.artifact for e in rerun_count] == [load.id]

        with pytest.raises(ValueError, match="direction"):
            await catalog.lineage(fit.id, direction="sideways")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="depth"):
            await catalog.lineage(fit.id, depth=0)
