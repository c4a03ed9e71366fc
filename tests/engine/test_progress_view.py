"""What `slipstream run` and `executions watch` show: a row per node with its task, phase, attempt,
time and retries, a map's progress, and final states that stay final."""

from __future__ import annotations

from datetime import timedelta

import anyio
from rich.console import Console

from engine import Engine
from engine._cli_view import elapsed, node_counts, progress_view
from engine._details import ExecutionDetails, NodeDetails

from . import _view_workflows as wf


def rendered(details: ExecutionDetails) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(progress_view(details, details.finished_at or details.created_at))
    return console.export_text()


async def test_rows_name_each_node_with_its_task_attempt_and_retries(eng: Engine) -> None:
    handle = await eng.launch(wf.retried_then_mapped, xs=[1, 2, 3])
    assert await handle.outputs(timeout=30) == 1 + 2 + 3 + 4
    details = await eng.get(handle.execution_id)
    flaky = next(node for node in details.nodes if node.task.endswith("flaky_once"))
    assert (flaky.phase, flaky.attempt, flaky.retries) == ("succeeded", 2, 1)
    text = rendered(details)
    row = next(line for line in text.splitlines() if line.strip().startswith(flaky.node_id))
    assert "flaky_once" in row and "succeeded" in row and " 2 " in row and row.rstrip().endswith("1")
    assert "3/3" in text
    assert "bump" in text and "add_up" in text


async def test_an_aborted_map_shows_its_elements_cancelled_and_the_clock_stops(eng: Engine) -> None:
    handle = await eng.launch(wf.hanging_map, xs=list(range(5)))
    with anyio.fail_after(30):
        while True:
            details = await eng.get(handle.execution_id)
            node = next((n for n in details.nodes if n.size is not None), None)
            if node is not None and node.running + node.queued == 5:
                break
            await anyio.sleep(0.05)
    await eng.abort(handle.execution_id)
    await handle.wait(timeout=30)
    details = await eng.get(handle.execution_id)
    node = next(n for n in details.nodes if n.size is not None)
    assert (node.phase, node.running, node.queued, node.cancelled) == ("cancelled", 0, 0, 5)
    text = rendered(details)
    assert "0/5 (5 cancelled)" in text and "running (" not in text
    assert details.finished_at is not None
    later = details.finished_at + timedelta(hours=1)
    assert elapsed(details, later) == elapsed(details, details.finished_at)


def test_queued_nodes_are_not_counted_as_running() -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    nodes = [
        NodeDetails("n0", "queued", 1, queued_at=now),
        NodeDetails("n1", "running", 1, started_at=now),
        NodeDetails("n2", "succeeded", 1, started_at=now, finished_at=now),
        NodeDetails("n3", "waiting", 0),
    ]
    details = ExecutionDetails("e", "wf", "running", "p", "d", now, now, None, None, None, 5, nodes)
    assert node_counts(details) == {"done": 1, "running": 1, "queued": 1, "failed": 0, "waiting": 1}
    assert "1 running · 1 queued" in rendered(details)
