"""``slipstream catalog ls | show | lineage | evict`` on an embedded state directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine import Engine
from engine._cli import _main
from tests.catalog import _workflows as wf


def _run_pipeline(state_dir: Path) -> None:
    async def body() -> None:
        async with Engine.embedded(state_dir) as engine:
            handle = await engine.launch(wf.pipeline_wf, n=3)
            await handle.wait(timeout=60)

    asyncio.run(body())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = _main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ls_show_lineage_and_evict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run_pipeline(tmp_path)
    where = ("--state-dir", str(tmp_path))
    code, out, _ = cli(capsys, "catalog", "ls", *where, "--json")
    assert code == 0
    listed = {a["node_id"]: a for a in json.loads(out)}
    assert sorted(listed) == ["featurize", "fit", "load"]
    fit = listed["fit"]
    assert fit["outputs"] == {"o0": (0 + 1 + 4) / 3}

    code, out, _ = cli(capsys, "catalog", "ls", *where)
    assert code == 0 and "_workflows.fit" in out and fit["id"][:12] in out

    code, out, _ = cli(capsys, "catalog", "show", fit["id"][:10], *where)
    assert code == 0 and f"artifact    {fit['id']}" in out and "o0 = 1.6666666666666667" in out
    code, out, _ = cli(capsys, "catalog", "show", fit["id"], *where, "--json")
    assert json.loads(out)["id"] == fit["id"]

    code, out, _ = cli(capsys, "catalog", "lineage", fit["id"], *where)
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"{fit['id'][:12]} fit"
    assert lines[1].startswith(f"└── made from {listed['featurize']['id'][:12]} featurize via fit#1 in ")
    assert lines[2].startswith(f"    └── made from {listed['load']['id'][:12]} load via featurize#1 in ")
    load_id = listed["load"]["id"]
    code, out, _ = cli(capsys, "catalog", "lineage", load_id, "--direction", "downstream", *where, "--json")
    graph = json.loads(out)
    assert graph["depths"] == {listed["load"]["id"]: 0, listed["featurize"]["id"]: 1, fit["id"]: 2}
    assert graph["artifacts"][fit["id"]]["task"].endswith("fit")

    code, out, _ = cli(capsys, "catalog", "evict", fit["id"], *where, "--json")
    assert code == 0 and json.loads(out) == {"evicted": 1}
    code, out, _ = cli(capsys, "catalog", "evict", "--task", listed["load"]["dataset"]["name"], *where)
    assert code == 0 and out.strip() == "evicted 1 artifact"
    code, out, _ = cli(capsys, "catalog", "ls", *where, "--json")
    assert [a["node_id"] for a in json.loads(out)] == ["featurize"]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ("--state-dir", str(tmp_path))
    code, _, err = cli(capsys, "catalog", "show", "0123456789", *where)
    assert code == 2 and err.startswith("error: no artifact '0123456789'") and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "catalog", "evict", *where)
    assert code == 2 and "name one ARTIFACT or pass --task" in err
    code, _, err = cli(capsys, "catalog", "lineage", "0123456789", "--direction", "up", *where)
    assert code == 2 and "--direction must be upstream or downstream" in err
    code, out, _ = cli(capsys, "catalog", "ls", *where)
    assert code == 0 and out.strip() == "no artifacts"
