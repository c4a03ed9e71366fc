"""Golden histories: event logs recorded from the planner and committed.

Two guarantees ride on them:
- stored events are forever: today's code must decode and fold every committed history, so a field
  renamed or retyped in `engine.events` fails here before it breaks a production log;
- the planner is deterministic: replaying the same scenario reproduces the same history exactly. A
  deliberate change of behaviour regenerates them: ``SLIPSTREAM_UPDATE_GOLDEN=1 pytest tests/propeller``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from engine.events import AnyEvent
from engine.interfaces import TaskRequest, TaskStatus
from engine.models import ErrorInfo, SubworkflowNode, TaskOptions, WorkflowSpec
from engine.state import ExecutionState
from propeller import PlannerConfig

from ._sim import (
    ArrayNode,
    DynamicNode,
    InputBinding,
    LiteralBinding,
    OutputRef,
    Sim,
    add_one,
    lit,
    out,
    ref,
    spec_of,
    task_node,
)

GOLDEN = Path(__file__).parent / "golden"
_decode = msgspec.json.Decoder(list[AnyEvent])


def _fail(message: str, retryable: bool = True) -> TaskStatus:
    return TaskStatus(phase="failed", error=ErrorInfo(kind="user", message=message, retryable=retryable))


def diamond() -> Sim:
    return Sim(
        spec_of(
            task_node("a", x=InputBinding("x")),
            task_node("b", x=OutputRef("a", "o0")),
            task_node("c", x=OutputRef("a", "o0")),
            task_node("d", l=OutputRef("b", "o0"), r=OutputRef("c", "o0")),
            outputs={"o0": OutputRef("d", "o0")},
        )
    )


def map_with_a_tolerated_failure() -> Sim:
    array = ArrayNode(
        id="m", task=ref("el"), inputs={"x": LiteralBinding(lit(list(range(5))))}, mapped=["x"],
        interface_outputs=out(), concurrency=2, min_success_ratio=0.8,
    )  # fmt: skip
    return Sim(
        spec_of(array, outputs={"o0": OutputRef("m", "o0")}),
        behaviour=lambda r: _fail("bad element", retryable=False) if r.key.node_id == "m/3" else add_one(r),
    )


def retries_and_a_dynamic() -> Sim:
    child = WorkflowSpec(
        name="child", inputs=[], outputs=out(), nodes=[task_node("t", x=LiteralBinding(lit(1)))],
        output_bindings={"o0": OutputRef("t", "o0")},
    )  # fmt: skip

    def behaviour(request: TaskRequest) -> TaskStatus:
        if request.kind == "dynamic":
            return TaskStatus(phase="succeeded", dynamic_spec=lit(child))
        if request.key.node_id == "flaky" and request.key.attempt < 3:
            return _fail(f"attempt {request.key.attempt}")
        return add_one(request)

    return Sim(
        spec_of(
            task_node("flaky", options=TaskOptions(retries=2)),
            DynamicNode(id="d", task=ref("d"), inputs={"x": OutputRef("flaky", "o0")}, interface_outputs=out()),
            outputs={"o0": OutputRef("d", "o0")},
        ),
        behaviour=behaviour,
        config=PlannerConfig(retry_delay=1.0),
    )


def finish_executable_with_a_subworkflow() -> Sim:
    sub = WorkflowSpec(
        name="sub", inputs=[], outputs=[], nodes=[task_node("bad"), task_node("ok")], output_bindings={},
    )  # fmt: skip
    spec = spec_of(
        SubworkflowNode(id="sw", workflow="sub", inputs={}, interface_outputs=[]),
        task_node("after", x=InputBinding("x")),
        subworkflows={"sub": sub},
        failure_policy="finish_executable",
    )
    return Sim(spec, behaviour=lambda r: _fail("boom", retryable=False) if r.key.node_id == "sw/bad" else add_one(r))


SCENARIOS: dict[str, Callable[[], Sim]] = {
    "diamond": diamond,
    "map_with_a_tolerated_failure": map_with_a_tolerated_failure,
    "retries_and_a_dynamic": retries_and_a_dynamic,
    "finish_executable_with_a_subworkflow": finish_executable_with_a_subworkflow,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_history(name: str) -> None:
    path = GOLDEN / f"{name}.json"
    sim = SCENARIOS[name]()
    sim.run()
    recorded = msgspec.json.format(msgspec.json.encode(sim.events), indent=1)
    if os.environ.get("SLIPSTREAM_UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_bytes(recorded + b"\n")
    golden = _decode.decode(path.read_bytes())
    state = ExecutionState.fold(golden)  # committed histories still decode and fold
    assert state.is_terminal
    assert sim.events == golden, f"the planner no longer reproduces {path.name}"


def test_a_map_logged_one_event_per_element_still_folds_and_finishes() -> None:
    """Logs from before chunks hold NodeQueued/NodeRunning/NodeSucceeded per element: they fold,
    and one cut off mid-map finishes under today's planner, which sends the rest in chunks."""
    legacy = _decode.decode((GOLDEN / "legacy_map_with_element_events.json").read_bytes())
    state = ExecutionState.fold(legacy)
    assert state.phase == "succeeded" and state.arrays["m"].succeeded == 4 and state.arrays["m"].failed == 1

    cut = next(i for i, e in enumerate(legacy) if type(e).__name__ == "NodeSucceeded" and e.node_id == "m/1")
    sim = map_with_a_tolerated_failure()
    sim.events = list(legacy[: cut + 1])
    sim.state = ExecutionState.fold(sim.events)
    sim.in_flight = {}
    final = sim.run()
    assert final.phase == "succeeded"
    outputs = msgspec.msgpack.decode(final.outputs["o0"]) if final.outputs else None
    assert outputs == [1, 2, 3, None, 5]
    kinds = [type(e).__name__ for e in sim.events[cut + 1 :]]
    assert "ChunkQueued" in kinds  # the rest went out in chunks
