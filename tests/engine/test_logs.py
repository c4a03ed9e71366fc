"""Each attempt's stdout, stderr and logger records are kept apart, bounded, stored when it ends and
read back with `Engine.logs` and `slipstream logs`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from engine import Engine
from engine._capture import LOG_LIMIT
from engine.events import NodeFailed, NodeSucceeded

from . import _log_workflows as wf


async def all_logs(eng: Engine, execution_id: str, **options) -> list:
    return [entry async for entry in eng.logs(execution_id, **options)]


async def test_two_concurrent_sync_tasks_prints_land_in_their_own_logs(eng: Engine) -> None:
    handle = await eng.launch(wf.two_chatty, lines=50)
    assert await handle.outputs(timeout=60) == (50, 50)
    logs = await all_logs(eng, handle.execution_id)
    assert len(logs) == 2
    by_name = {entry.text.split()[0]: entry.text for entry in logs}
    for name, other in (("left", "right"), ("right", "left")):
        text = by_name[name]
        assert [line for line in text.splitlines() if " line " in line] == [f"{name} line {i}" for i in range(50)]
        assert f"{name} to stderr" in text
        assert f"{name} logged" in text
        assert other not in text


async def test_each_attempt_keeps_its_own_log_and_failed_attempts_keep_theirs(eng: Engine) -> None:
    handle = await eng.launch(wf.retried)
    assert await handle.outputs(timeout=60) == 1
    history = await eng.history(handle.execution_id)
    failed = next(e for e in history if isinstance(e, NodeFailed))
    succeeded = next(e for e in history if isinstance(e, NodeSucceeded) and e.node_id == failed.node_id)
    assert failed.logs and succeeded.logs and failed.logs != succeeded.logs  # addresses, not text
    logs = await all_logs(eng, handle.execution_id)
    assert [(entry.attempt, entry.text.splitlines()[0]) for entry in logs] == [
        (1, "attempt 1 starts"),
        (2, "attempt 2 starts"),
    ]
    only_second = await all_logs(eng, handle.execution_id, attempt=2)
    assert [entry.attempt for entry in only_second] == [2]


async def test_map_elements_have_their_own_logs(eng: Engine) -> None:
    handle = await eng.launch(wf.shouting_map, xs=[10, 20, 30])
    await handle.outputs(timeout=60)
    logs = await all_logs(eng, handle.execution_id)
    assert sorted(entry.text for entry in logs) == ["element 10\n", "element 20\n", "element 30\n"]
    element = logs[0].node_id
    assert [entry.node_id for entry in await all_logs(eng, handle.execution_id, node_id=element)] == [element]


async def test_a_log_keeps_its_start_and_end_within_the_bound(eng: Engine) -> None:
    handle = await eng.launch(wf.flooding, characters=3 * LOG_LIMIT)
    await handle.outputs(timeout=60)
    (entry,) = await all_logs(eng, handle.execution_id)
    assert len(entry.text) < LOG_LIMIT + 100
    assert entry.text.startswith("aaaa") and entry.text.endswith("bbb\nthe end\n")
    assert "characters dropped" in entry.text


async def test_follow_shows_lines_of_a_running_attempt_then_its_end(eng: Engine, tmp_path: Path) -> None:
    release = tmp_path / "release"
    handle = await eng.launch(wf.waiting, path=str(release))
    seen = []
    with anyio.fail_after(30):
        async for entry in eng.logs(handle.execution_id, follow=True):
            seen.append(entry)
            if entry.running and "waiting for the file" in entry.text:
                release.write_text("done")
    assert seen[0].running and seen[0].text == "waiting for the file\n"
    assert "got it" in "".join(entry.text for entry in seen)
    assert await handle.outputs(timeout=10) == "done"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine._cli", *args], capture_output=True, text=True, timeout=60)


async def test_slipstream_logs_prints_each_attempt_under_a_header(tmp_path: Path) -> None:
    async with Engine.embedded(state_dir=tmp_path) as eng:
        handle = await eng.launch(wf.retried)
        await handle.outputs(timeout=60)
    command = ["logs", handle.execution_id, "--state-dir", str(tmp_path)]
    out = cli(*command)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].endswith("attempt 1 <==")
    assert "attempt 2 starts" in out.stdout
    out = cli(*command, "--attempt", "2", "--json")
    (line,) = out.stdout.splitlines()
    assert json.loads(line)["text"] == "attempt 2 starts\n"


async def test_the_loop_logs_one_line_per_execution_start_and_end(
    eng: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="slipstream.executions")
    ok = await eng.launch(wf.shouting_map, xs=[1])
    await ok.outputs(timeout=30)
    bad = await eng.launch(wf.failing)
    await bad.wait(timeout=30)
    records = [r for r in caplog.records if r.name == "slipstream.executions"]
    assert [r.event for r in records if r.execution == ok.execution_id] == ["execution_started", "execution_succeeded"]
    assert [r.event for r in records if r.execution == bad.execution_id] == ["execution_started", "execution_failed"]
    ended = next(r for r in records if r.event == "execution_succeeded")
    assert ended.getMessage().startswith(f"execution succeeded execution={ok.execution_id} workflow=shouting_map")
    assert ended.seconds >= 0
    failed = next(r for r in records if r.event == "execution_failed").getMessage()
    assert 'error="ValueError: bad value 3"' in failed and "node=" in failed


async def test_another_process_follows_the_lines_of_a_running_attempt(tmp_path: Path) -> None:
    """`slipstream logs --follow` in another process sees a running attempt's lines through the
    file the attempt mirrors them to, then its end; the file is gone once the attempt ended."""
    release = tmp_path / "release"
    async with Engine.embedded(state_dir=tmp_path) as eng:
        handle = await eng.launch(wf.waiting, path=str(release))
        command = [sys.executable, "-m", "engine._cli", "logs", handle.execution_id, "--follow", "--json"]
        follower = await anyio.open_process([*command, "--state-dir", str(tmp_path)])
        assert follower.stdout is not None
        lines: list[dict] = []
        buffer = b""
        with anyio.fail_after(30):
            async for chunk in follower.stdout:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    lines.append(json.loads(line))
                    if lines[-1]["running"] and "waiting for the file" in lines[-1]["text"]:
                        await anyio.Path(release).write_text("done")
            await follower.wait()
        assert await handle.outputs(timeout=10) == "done"
    assert lines[0] == {"node_id": lines[0]["node_id"], "attempt": 1, "text": "waiting for the file\n", "running": True}
    assert "got it" in "".join(line["text"] for line in lines)
    assert not any((tmp_path / "logs").rglob("*.log"))


async def test_echoed_lines_of_concurrent_tasks_stay_whole(eng: Engine, capfd: pytest.CaptureFixture[str]) -> None:
    handle = await eng.launch(wf.two_chatty, lines=200)
    await handle.outputs(timeout=60)
    echoed = [line for line in capfd.readouterr().out.splitlines() if " line " in line]
    assert len(echoed) == 400
    for line in echoed:  # one prefix and one task's line each, never two glued together
        assert line.count("[") == 1 and line.count(" line ") == 1, line
