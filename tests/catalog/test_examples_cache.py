"""The examples memoize: run twice on one state directory (two engines, as two CLI runs are), the
second run reuses every cached task's outputs."""

from __future__ import annotations

from pathlib import Path

from engine import Engine
from engine._cli import load_workflow
from engine.events import ElementsReused, NodeCacheHit, NodeQueued

ROOT = Path(__file__).resolve().parents[2]


async def _run(state_dir: Path, target: str, **inputs: object) -> tuple[object, list[object]]:
    workflow = load_workflow(str(ROOT / "examples" / target))
    async with Engine.embedded(state_dir) as engine:
        handle = await engine.launch(workflow, **inputs)
        await handle.wait(timeout=120)
        return await handle.outputs(), await engine.history(handle.execution_id)


async def test_knn_twice_evaluates_once(tmp_path: Path) -> None:
    first, history1 = await _run(tmp_path, "knn.py:wf", max_k=6)
    second, history2 = await _run(tmp_path, "knn.py:wf", max_k=6)
    assert first == second
    evaluated = [e.node_id for e in history1 if isinstance(e, NodeQueued) and "evaluate" in e.node_id]
    reused = [e.node_id for e in history2 if isinstance(e, NodeCacheHit)]
    assert len(evaluated) == 3 and sorted(reused) == sorted(evaluated)  # k = 1, 3, 5
    assert not [e for e in history2 if isinstance(e, NodeQueued) and "evaluate" in e.node_id]


async def test_feature_pruning_twice_trains_nothing(tmp_path: Path) -> None:
    first, _ = await _run(tmp_path, "feature_pruning.py:wf", depth=2)
    second, history = await _run(tmp_path, "feature_pruning.py:wf", depth=2)
    assert first == second
    assert [e.node_id for e in history if isinstance(e, NodeCacheHit)] == ["prepare"]
    reused = [e for e in history if isinstance(e, ElementsReused)]
    assert sum(len(e.results) for e in reused) == 10 + 9  # every train element of both rounds
    assert not [e for e in history if type(e).__name__ == "ChunkQueued"]
