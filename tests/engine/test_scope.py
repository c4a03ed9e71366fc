"""Projects are names and domains come from a configured list: anything else is refused before
anything is written."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine import Engine, InvalidScope

from . import _workflows as wf


@pytest.mark.parametrize(
    ("project", "domain", "fragment"),
    [
        ("default", "prodution", "did you mean 'production'"),
        ("", "development", "project ''"),
        ("x" * 64, "development", "1 to 63"),
        ("a/b", "development", "project 'a/b'"),
    ],
)
async def test_launch_refuses_a_bad_project_or_domain(eng: Engine, project: str, domain: str, fragment: str) -> None:
    with pytest.raises(InvalidScope, match=fragment):
        await eng.launch(wf.diamond, project=project, domain=domain)
    assert await eng.list_executions() == []


async def test_domains_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPSTREAM_DOMAINS", "dev, prod")
    async with Engine.embedded(state_dir=tmp_path) as eng:
        assert eng.domains == ("dev", "prod")
        handle = await eng.launch(wf.diamond, domain="prod")
        assert await handle.outputs(timeout=30) == 16
        with pytest.raises(InvalidScope, match="not one of dev, prod"):
            await eng.launch(wf.diamond, domain="development")


async def test_a_scoped_engine_sees_nothing_of_another_project(make_engine) -> None:
    """Project ``b``'s engine cannot read, wait for, abort, recover, fetch outputs or logs of, or
    subscribe to project ``a``'s execution: it is not found, as if it did not exist."""
    from engine import ExecutionNotFound

    async with make_engine(project="a") as engine_a:
        theirs = await engine_a.launch(wf.diamond, x=2)
        assert await theirs.outputs(timeout=30) == 12
        assert (await engine_a.get(theirs.execution_id)).project == "a"
    async with make_engine(project="b", run_loop=False) as engine_b:
        hidden = theirs.execution_id
        for verb in (engine_b.get, engine_b.history, engine_b.abort, engine_b.recover, engine_b.outputs):
            with pytest.raises(ExecutionNotFound):
                await verb(hidden)
        with pytest.raises(ExecutionNotFound):
            await engine_b.handle(hidden).wait(timeout=5)
        with pytest.raises(ExecutionNotFound):
            [entry async for entry in engine_b.logs(hidden)]
        assert await engine_b.list_executions() == []
        assert await engine_b.list_executions(project=None) == []
        with pytest.raises(InvalidScope, match="scoped to project 'b'"):
            await engine_b.list_executions(project="a")
        with pytest.raises(InvalidScope, match="scoped to project 'b'"):
            await engine_b.launch(wf.diamond, project="a")
        mine = await engine_b.launch(wf.diamond, x=1)
        seen = []
        async with engine_b.subscribe(from_start=True) as subscription:
            async for delivery in subscription:
                seen.append(delivery.event.execution_id)
                if delivery.event.execution_id == mine.execution_id:
                    break
        assert hidden not in seen and mine.execution_id in seen
    async with make_engine(run_loop=False) as admin:  # unscoped: an administrator's
        assert {s.project for s in await admin.list_executions()} == {"a", "b"}


async def test_a_scoped_engine_runs_only_its_projects_executions(make_engine) -> None:
    """A scoped engine's loop (``SLIPSTREAM_PROJECT=a slipstream serve``) resumes the unfinished
    executions of its project and leaves another project's to the servers of that one."""
    async with make_engine(run_loop=False) as client:  # launches, runs nothing
        ours = await client.launch(wf.diamond, project="a", x=2)
        theirs = await client.launch(wf.diamond, project="b", x=2)
    async with make_engine(project="a") as engine_a:
        assert await engine_a.handle(ours.execution_id).outputs(timeout=30) == 12
        await engine_a.controller.resync()  # a sweep looks at the store's unfinished executions again
        await anyio.sleep(0.3)
    async with make_engine(run_loop=False) as admin:
        assert (await admin.get(theirs.execution_id)).status == "created"  # untouched
    async with make_engine(project="b") as engine_b:
        assert await engine_b.handle(theirs.execution_id).outputs(timeout=30) == 12


@pytest.mark.parametrize(
    ("domain", "hint"),
    [
        ("prod", "; did you mean 'production'?"),
        ("dev", "; did you mean 'development'?"),
        ("prodution", "; did you mean 'production'?"),
        ("e", ""),  # a letter of every name is no abbreviation of any
        ("de", ""),
        ("ment", ""),  # inside a name, not its start
    ],
)
def test_a_domain_hint_names_only_an_abbreviation_or_a_near_spelling(domain: str, hint: str) -> None:
    from engine._validation import check_scope

    with pytest.raises(InvalidScope) as caught:
        check_scope("default", domain, ("development", "staging", "production"))
    assert str(caught.value) == f"domain {domain!r} is not one of development, staging, production{hint}"
