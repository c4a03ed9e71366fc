"""Catalog entries belong to a project and domain (DESIGN 11): cache hits and named artifacts
never cross projects, and a scoped engine's or CLI's catalog views show only its own entries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine import ArtifactNotFound, Engine, InvalidScope
from engine._cli import _main
from engine.events import NodeCacheHit
from tests.catalog import _workflows as wf
from tests.catalog.conftest import EngineFactory, flushed, runs


async def test_cache_hits_never_cross_projects_or_domains(make_engine: EngineFactory, side_effects: Path) -> None:
    async with make_engine() as engine:
        for project, domain in (("a", "development"), ("b", "development"), ("a", "production")):
            handle = await engine.launch(wf.square_wf, project=project, domain=domain, x=7)
            assert await handle.outputs(timeout=60) == 49
            await flushed(engine)
        assert len(runs(side_effects, "slow_square")) == 3  # one per project and domain: no hit across
        again = await engine.launch(wf.square_wf, project="b", x=7)
        assert await again.outputs(timeout=60) == 49
        assert any(isinstance(event, NodeCacheHit) for event in await engine.history(again.execution_id))
        assert len(runs(side_effects, "slow_square")) == 3
        catalog = engine.catalog
        assert catalog is not None
        assert {(a.dataset.project, a.dataset.domain) for a in await catalog.list_artifacts()} == {
            ("a", "development"),
            ("b", "development"),
            ("a", "production"),
        }


async def test_named_artifacts_are_found_only_in_their_project(make_engine: EngineFactory) -> None:
    async with make_engine() as engine:
        await (await engine.launch(wf.publish_wf, project="a", region="eu", n=3)).wait(timeout=60)
        await flushed(engine)
        catalog = engine.catalog
        assert catalog is not None
        assert [a.dataset.project for a in await catalog.query("features")] == ["a"]
        assert await catalog.query("features", project="b") == []
        assert await catalog.query("features", project="a", domain="staging") == []
        # an administrator launching into project b does not take project a's artifact either
        with pytest.raises(ArtifactNotFound, match="no artifact answers"):
            await engine.launch(wf.consume_wf, project="b")
    async with make_engine(project="b", run_loop=False) as other:
        with pytest.raises(ArtifactNotFound):
            await other.launch(wf.consume_wf)
        assert await other.list_executions() == []  # refused before anything was written
    async with make_engine(project="a") as mine:
        handle = await mine.launch(wf.consume_wf)
        assert await handle.outputs(timeout=60) == 0 + 1 + 2
        with pytest.raises(InvalidScope):
            await mine.launch(wf.consume_wf, project="b")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = _main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The CLI's store option: an embedded state dir, or a fresh Postgres database (its public schema)."""
    if request.param == "sqlite":
        return ("--state-dir", str(tmp_path))
    return ("--postgres", request.getfixturevalue("postgres_database"))


def _pipelines(where: tuple[str, str]) -> None:
    async def body() -> None:
        option, value = where
        opened = Engine.embedded(value) if option == "--state-dir" else Engine.connect(value, executor="local")
        async with opened as engine:
            for project, n in (("a", 3), ("b", 4)):
                await (await engine.launch(wf.pipeline_wf, project=project, n=n)).wait(timeout=60)
            await flushed(engine)

    asyncio.run(body())


def test_the_catalog_commands_are_scoped(where: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    _pipelines(where)
    code, out, _ = cli(capsys, "catalog", "ls", *where, "--json")
    everything = json.loads(out)
    assert code == 0 and {a["dataset"]["project"] for a in everything} == {"a", "b"}
    code, out, _ = cli(capsys, "catalog", "ls", *where, "--project", "b", "--json")
    theirs = {a["node_id"]: a for a in json.loads(out)}
    assert code == 0 and {a["dataset"]["project"] for a in theirs.values()} == {"b"} and len(theirs) == 3
    code, out, _ = cli(capsys, "catalog", "ls", *where, "--project", "a", "--json")
    mine = {a["node_id"]: a for a in json.loads(out)}

    code, _, err = cli(capsys, "catalog", "show", theirs["fit"]["id"], *where, "--project", "a")
    assert code == 2 and err.count("\n") == 1 and "no artifact" in err  # not found, like a missing one
    code, out, _ = cli(capsys, "catalog", "show", mine["fit"]["id"], *where, "--project", "a", "--json")
    assert code == 0 and json.loads(out)["dataset"]["project"] == "a"
    code, _, err = cli(capsys, "catalog", "lineage", theirs["fit"]["id"], *where, "--project", "a")
    assert code == 2 and "no artifact" in err
    code, out, _ = cli(capsys, "catalog", "lineage", mine["fit"]["id"], *where, "--project", "a", "--json")
    assert code == 0 and set(json.loads(out)["depths"]) == {mine[n]["id"] for n in ("fit", "featurize", "load")}

    task = theirs["load"]["dataset"]["name"]
    code, out, _ = cli(capsys, "catalog", "evict", "--task", task, *where, "--project", "b", "--json")
    assert code == 0 and json.loads(out) == {"evicted": 1}
    code, out, _ = cli(capsys, "catalog", "ls", *where, "--task", task, "--json")
    assert [a["dataset"]["project"] for a in json.loads(out)] == ["a"]  # project a's is still there

    for bad in ("", "a b", "x" * 64):
        code, _, err = cli(capsys, "catalog", "ls", *where, "--project", bad)
        assert code == 2 and err.count("\n") == 1 and "is not a name" in err


async def test_a_scoped_engine_s_catalog_shows_only_its_scope(make_engine: EngineFactory) -> None:
    from datetime import UTC, datetime

    async with make_engine() as admin:
        for project, n in (("a", 3), ("b", 4)):
            await (await admin.launch(wf.pipeline_wf, project=project, n=n)).wait(timeout=60)
            await (await admin.launch(wf.publish_wf, project=project, region="eu", n=n)).wait(timeout=60)
        await flushed(admin)
        assert admin.catalog is not None
        every = await admin.catalog.list_artifacts()
    theirs = next(a for a in every if a.dataset.project == "a" and a.node_id == "fit")
    async with make_engine(project="b", run_loop=False) as scoped:
        catalog = scoped.catalog
        assert catalog is not None and type(catalog).__name__ == "ScopedCatalog"
        mine = await catalog.list_artifacts()
        assert mine and {a.dataset.project for a in mine} == {"b"}
        assert await catalog.get(theirs.id) is None
        assert await catalog.get(mine[0].id) == mine[0]
        assert [a.dataset.project for a in await catalog.query("features", latest=False)] == ["b"]
        assert await catalog.edges(execution_id=theirs.execution_id) == []
        assert (await catalog.lineage(theirs.id)).links == []
        assert await catalog.evict(artifact_id=theirs.id) == 0
        with pytest.raises(InvalidScope, match="scoped to project 'b'"):
            await catalog.list_artifacts(project="a")
        with pytest.raises(InvalidScope, match="not in this catalog's scope"):
            await catalog.publish(theirs.id, "stolen", {}, now=datetime.now(UTC))
        fit = next(a for a in mine if a.node_id == "fit")
        upstream = await catalog.lineage(fit.id)
        assert upstream.links and set(upstream.depths) <= {a.id for a in mine}
    async with make_engine(run_loop=False) as admin:
        assert admin.catalog is not None and await admin.catalog.get(theirs.id) == theirs  # nothing was evicted
