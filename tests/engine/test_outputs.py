"""Reading values back: `Engine.outputs` for an execution or a node, typed where the code imports,
plain otherwise, and `slipstream executions outputs` / `show` from another process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.errors import ExecutionNotFinished, NodeNotFound, OutputsNotReady, TaskFailed

from . import _output_workflows as wf


async def node_of(eng: Engine, execution_id: str, task_name: str) -> str:
    created = (await eng.history(execution_id))[0]
    return next(node.id for node in created.spec.nodes if node.task.name.endswith(task_name))


async def test_outputs_of_an_execution_and_of_its_nodes_are_typed(eng: Engine) -> None:
    handle = await eng.launch(wf.scored, xs=[2, 4, 6])
    await handle.wait(timeout=30)
    assert await eng.outputs(handle.execution_id) == wf.Score("knn", 6.0)
    assert await eng.handle(handle.execution_id).outputs() == wf.Score("knn", 6.0)  # typed, not a dict
    assert await eng.outputs(handle.execution_id, typed=False) == {"name": "knn", "value": 6.0}

    mapped = await node_of(eng, handle.execution_id, "halve")
    assert await eng.outputs(handle.execution_id, mapped) == [1.0, 2.0, 3.0]
    assert await eng.outputs(handle.execution_id, f"{mapped}/2") == 3.0
    scored = await node_of(eng, handle.execution_id, "score")
    assert await eng.outputs(handle.execution_id, scored) == wf.Score("knn", 6.0)

    with pytest.raises(NodeNotFound, match="executions show"):
        await eng.outputs(handle.execution_id, f"{mapped}/3")
    with pytest.raises(NodeNotFound):
        await eng.outputs(handle.execution_id, "nope")


async def test_a_failed_node_and_a_running_execution_have_no_outputs(eng: Engine) -> None:
    handle = await eng.launch(wf.failing)
    await handle.wait(timeout=30)
    with pytest.raises(TaskFailed):
        await eng.outputs(handle.execution_id)
    node = await node_of(eng, handle.execution_id, "fails")
    with pytest.raises(OutputsNotReady, match="it is failed"):
        await eng.outputs(handle.execution_id, node)


async def test_outputs_of_an_unfinished_execution_is_a_typed_error(make_engine) -> None:
    async with make_engine(run_loop=False) as client:
        handle = await client.launch(wf.scored)
        with pytest.raises(ExecutionNotFinished, match="still"):
            await client.outputs(handle.execution_id)


async def test_the_engine_that_ended_an_execution_answers_its_outputs_without_reading_the_log(
    eng: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop keeps the final state it recorded, so waiting for the outputs in the process that
    ran the execution reads none of its events again (a whole log, read and folded, otherwise),
    once: later reads go to the log, so a log changed since is caught (test_tamper)."""
    reads: list[str] = []
    read = eng.store.read

    async def counted(execution_id: str, after: int = 0) -> list[Any]:
        reads.append(execution_id)
        return await read(execution_id, after)

    monkeypatch.setattr(eng.store, "read", counted)
    handle = await eng.launch(wf.scored, xs=[2, 4, 6])
    assert await handle.outputs(timeout=30) == wf.Score("knn", 6.0)
    assert reads.count(handle.execution_id) == 1  # the loop's first round, nothing since
    failing = await eng.launch(wf.failing)
    with pytest.raises(TaskFailed):
        await failing.outputs(timeout=30)
    assert reads.count(failing.execution_id) == 1
    # given once: asked again, the outputs come from the log (and its checks)
    assert await handle.outputs(timeout=30) == wf.Score("knn", 6.0)
    assert reads.count(handle.execution_id) == 2
    # and only while the log is where the loop ended it
    later = await eng.launch(wf.scored, xs=[2])
    summary = await later.wait(timeout=30)
    assert eng.controller is not None
    assert eng.controller.take_ended_state(later.execution_id, summary.version + 1) is None
    assert await later.outputs(timeout=30) == wf.Score("knn", 1.0)
    assert reads.count(later.execution_id) == 2


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine._cli", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


async def test_the_cli_prints_outputs_and_show_includes_inputs_and_outputs(tmp_path: Path) -> None:
    async with Engine.embedded(state_dir=tmp_path) as eng:
        handle = await eng.launch(wf.scored, xs=[2, 4])
        await handle.wait(timeout=30)
        mapped = await node_of(eng, handle.execution_id, "halve")
    # from an unrelated directory: the test's modules cannot be imported, values come back plain
    state = ["--state-dir", str(tmp_path)]
    out = cli("executions", "outputs", handle.execution_id, *state, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"name": "knn", "value": 3.0}
    out = cli("executions", "outputs", handle.execution_id, "--node", f"{mapped}/1", *state, "--json", cwd=tmp_path)
    assert json.loads(out.stdout) == 2.0
    shown = json.loads(cli("executions", "show", handle.execution_id, *state, "--json", cwd=tmp_path).stdout)
    assert shown["inputs"] == {"name": "knn", "xs": [2, 4]}
    assert shown["outputs"] == {"name": "knn", "value": 3.0}
    text = cli("executions", "show", handle.execution_id, *state, cwd=tmp_path)
    assert "outputs: {'name': 'knn', 'value': 3.0}" in text.stdout
    missing = cli("executions", "outputs", handle.execution_id, "--node", "n99", *state, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "no node 'n99'" in missing.stderr
