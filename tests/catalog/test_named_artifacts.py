"""Named, partitioned artifacts on both backends: tasks publish their outputs under a name, queries
find the newest, and a workflow input defaulting to a query is resolved at launch and recorded."""

from __future__ import annotations

import pytest

from engine import ArtifactNotFound, ArtifactQuery, task
from engine.errors import CompileError, TypeMismatch
from engine.events import ExecutionCreated
from tests.catalog import _workflows as wf
from tests.catalog.conftest import EngineFactory, flushed


async def test_published_outputs_feed_a_workflow_input(make_engine: EngineFactory) -> None:
    async with make_engine() as engine:
        catalog = engine.catalog
        assert catalog is not None
        with pytest.raises(ArtifactNotFound, match="input 'features': no artifact answers ArtifactQuery"):
            await engine.launch(wf.consume_wf)
        assert not await engine.list_executions()  # nothing was written
        for region, n in (("eu", 3), ("us", 5), ("eu", 4)):
            handle = await engine.launch(wf.publish_wf, region=region, n=n)
            await handle.wait(timeout=60)
        await flushed(engine)

        [eu] = await catalog.query("features", {"region": "eu"})
        assert eu.partitions == {"region": "eu"} and eu.tags == ["features"]
        assert len(await catalog.query("features", latest=False)) == 3

        handle = await engine.launch(wf.consume_wf)  # the default: the newest "eu" features
        await handle.wait(timeout=60)
        assert await handle.outputs() == 0 + 1 + 2 + 3
        created = (await engine.history(handle.execution_id))[0]
        assert isinstance(created, ExecutionCreated) and created.artifacts == {"features": eu.id}
        await flushed(engine)  # the run that consumed it is in the artifact's lineage
        consumers = await catalog.edges(artifact=eu.id)
        assert ("in", handle.execution_id, "summarize") in {(e.direction, e.execution_id, e.node_id) for e in consumers}

        handle = await engine.launch(wf.consume_wf, features=ArtifactQuery("features", {"region": "us"}))
        await handle.wait(timeout=60)
        assert await handle.outputs() == 10
        handle = await engine.launch(wf.consume_wf, features=[7])  # a value beats the default query
        await handle.wait(timeout=60)
        assert await handle.outputs() == 7
        created = (await engine.history(handle.execution_id))[0]
        assert isinstance(created, ExecutionCreated) and created.artifacts == {}

        with pytest.raises(ArtifactNotFound, match="has no output 'o1'"):
            await engine.launch(wf.consume_wf, features=ArtifactQuery("features", output="o1"))


async def test_an_artifact_of_the_wrong_type_is_refused(make_engine: EngineFactory) -> None:
    async with make_engine() as engine:
        handle = await engine.launch(wf.publish_wrong_wf, region="eu")
        await handle.wait(timeout=60)
        await flushed(engine)
        with pytest.raises(TypeMismatch, match=r"input 'features': artifact .* does not fit"):
            await engine.launch(wf.consume_wf)


def test_publish_options_are_checked() -> None:
    with pytest.raises(CompileError, match="partitions names \\['month'\\], which are not inputs"):

        @task(publish="x", partitions=["month"])
        def f(day: str) -> int:
            return 1

    with pytest.raises(CompileError, match="add publish="):

        @task(partitions=["day"])
        def g(day: str) -> int:
            return 1

    with pytest.raises(CompileError, match="publish names the artifact"):

        @task(publish="")
        def h(day: str) -> int:
            return 1


def test_a_publishing_task_cannot_be_mapped() -> None:
    from engine import map_task

    with pytest.raises(CompileError, match="publishes its outputs as 'features'"):
        map_task(wf.make_features)
