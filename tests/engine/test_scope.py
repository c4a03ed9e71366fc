"""Projects are names and domains come from a configured list: anything else is refused before
anything is written."""

from __future__ import annotations

from pathlib import Path

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
