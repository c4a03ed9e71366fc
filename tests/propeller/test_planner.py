"""The pure planner, driven by the in-memory simulator: no store, no executor, a stepped clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.events import NodeSucceeded
from engine.interfaces import TaskRequest, TaskStatus
from engine.models import ErrorInfo, ListBinding, SubworkflowNode, WorkflowSpec
from engine.state import ExecutionState
from propeller import PlannerConfig

from ._sim import (
    ArrayNode,
    DynamicNode,
    InputBinding,
    LiteralBinding,
    OutputRef,
    Sim,
    TaskOptions,
    add_one,
    lit,
    out,
    ref,
    spec_of,
    task_node,
    unlit,
)


def fail(message: str = "boom", kind: str = "user", retryable: bool = True) -> TaskStatus:
    return TaskStatus(phase="failed", error=ErrorInfo(kind=kind, message=message, retryable=retryable))  # type: ignore[arg-type]


def diamond(**kw) -> WorkflowSpec:
    return spec_of(
        task_node("a", x=InputBinding("x")),
        task_node("b", x=OutputRef("a", "o0")),
        task_node("c", x=OutputRef("a", "o0")),
        task_node("d", l=OutputRef("b", "o0"), r=OutputRef("c", "o0")),
        outputs={"o0": OutputRef("d", "o0")},
        **kw,
    )


def assert_replays(sim: Sim) -> None:
    """The incrementally planned state equals a fresh fold of the log, at every prefix."""
    assert ExecutionState.fold(sim.events) == sim.state
    versions = [e.version for e in sim.events]
    assert versions == list(range(1, len(versions) + 1))


def test_diamond_runs_in_dependency_order() -> None:
    sim = Sim(diamond())
    state = sim.run()
    assert state.phase == "succeeded"
    assert unlit(state.outputs["o0"]) == 7  # a=2, b=c=3, d=3+3+1
    order = [r.key.node_id for r in sim.submits]
    assert order[0] == "a" and order[-1] == "d" and set(order[1:3]) == {"b", "c"}
    assert sim.rounds == 4  # a | b, c | d | done: one round per level
    assert_replays(sim)


def test_foreach_and_join_through_a_list_binding() -> None:
    items = [task_node(f"f{i}", "f", x=LiteralBinding(lit(i))) for i in range(5)]
    join = task_node("join", xs=ListBinding([OutputRef(f"f{i}", "o0") for i in range(5)]))
    sim = Sim(spec_of(*items, join, outputs={"o0": OutputRef("join", "o0")}))
    assert unlit(sim.run().outputs["o0"]) == sum(i + 1 for i in range(5)) + 1
    assert_replays(sim)


def test_user_retries_then_success_counts_attempts() -> None:
    calls: list[int] = []

    def flaky(request: TaskRequest) -> TaskStatus:
        calls.append(request.key.attempt)
        return fail() if request.key.attempt < 3 else add_one(request)

    sim = Sim(spec_of(task_node("a", options=TaskOptions(retries=2), x=InputBinding("x"))), behaviour=flaky)
    assert sim.run().phase == "succeeded"
    assert calls == [1, 2, 3]
    assert sim.kinds("a").count("NodeFailed") == 2
    assert_replays(sim)


def test_retries_exhausted_fails_execution_with_node_id() -> None:
    sim = Sim(spec_of(task_node("a", options=TaskOptions(retries=1), x=InputBinding("x"))), behaviour=lambda r: fail())
    state = sim.run()
    assert state.phase == "failed"
    assert state.error is not None and state.error.node_id == "a"
    assert len(sim.submits) == 2


def test_non_retryable_error_is_not_retried() -> None:
    sim = Sim(spec_of(task_node("a", options=TaskOptions(retries=3))), behaviour=lambda r: fail(retryable=False))
    assert sim.run().phase == "failed"
    assert len(sim.submits) == 1


def test_system_errors_use_their_own_budget() -> None:
    attempts: list[int] = []

    def dies(request: TaskRequest) -> TaskStatus:
        attempts.append(request.key.attempt)
        return fail("worker died", kind="system") if request.key.attempt <= 3 else add_one(request)

    sim = Sim(spec_of(task_node("a", options=TaskOptions(retries=0))), behaviour=dies)
    assert sim.run().phase == "succeeded"  # retries=0 yet three system failures were absorbed
    assert attempts == [1, 2, 3, 4]


def test_back_off_delays_the_next_attempt() -> None:
    sim = Sim(
        spec_of(task_node("a", options=TaskOptions(retries=2))),
        behaviour=lambda r: fail(),
        config=PlannerConfig(retry_delay=10.0),
        step=timedelta(seconds=1),
    )
    sim.run()
    queued = [e.at for e in sim.events if type(e).__name__ == "NodeQueued"]
    assert queued[1] - queued[0] >= timedelta(seconds=10)
    assert queued[2] - queued[1] >= timedelta(seconds=20)


def test_timeout_cancels_attempt_and_retries() -> None:
    def hangs_first(request: TaskRequest) -> TaskStatus | None:
        return None if request.key.attempt == 1 else add_one(request)

    sim = Sim(
        spec_of(task_node("a", options=TaskOptions(retries=1, timeout=5))),
        behaviour=hangs_first,
        config=PlannerConfig(retry_delay=0.0),
    )
    assert sim.run().phase == "succeeded"
    failed = [e for e in sim.events if type(e).__name__ == "NodeFailed"]
    assert failed[0].error.kind == "timeout" and failed[0].attempt == 1
    assert [k.attempt for k in sim.cancels] == [1]


def test_timeout_without_retries_fails() -> None:
    sim = Sim(spec_of(task_node("a", options=TaskOptions(timeout=2))), behaviour=lambda r: None)
    state = sim.run()
    assert state.phase == "failed" and state.error.kind == "timeout"


def test_fail_fast_stops_at_first_failure() -> None:
    def b_fails(request: TaskRequest) -> TaskStatus | None:
        if request.key.node_id == "b":
            return fail()
        return None if request.key.node_id == "c" else add_one(request)

    sim = Sim(diamond(), behaviour=b_fails)
    state = sim.run()
    assert state.phase == "failed"
    assert "d" not in [r.key.node_id for r in sim.submits]
    assert [k.node_id for k in sim.cancels] == ["c"]  # the running sibling is cancelled


def test_finish_executable_runs_what_it_can_then_fails() -> None:
    spec = spec_of(
        task_node("a"),
        task_node("bad"),
        task_node("after_bad", x=OutputRef("bad", "o0")),
        task_node("after_a", x=OutputRef("a", "o0")),
        failure_policy="finish_executable",
    )
    sim = Sim(spec, behaviour=lambda r: fail() if r.key.node_id == "bad" else add_one(r))
    state = sim.run()
    assert state.phase == "failed" and state.error.node_id == "bad"
    assert state.nodes["after_a"].phase == "succeeded"
    assert state.nodes["after_bad"].phase == "skipped"
    assert_replays(sim)


def map_spec(n: int, **kw) -> WorkflowSpec:
    array = ArrayNode(
        id="m",
        task=ref("sq"),
        inputs={"x": LiteralBinding(lit(list(range(n)))), "k": LiteralBinding(lit(100))},
        mapped=["x"],
        interface_outputs=out(),
        **kw,
    )
    return spec_of(array, outputs={"o0": OutputRef("m", "o0")})


def test_map_broadcasts_partial_arguments_and_gathers_in_order() -> None:
    sim = Sim(map_spec(10))
    state = sim.run()
    assert unlit(state.outputs["o0"]) == [i + 100 + 1 for i in range(10)]
    assert all(unlit(r.inputs["k"]) == 100 for r in sim.submits)
    assert_replays(sim)


def test_map_min_success_ratio_tolerates_one_failure_in_ten() -> None:
    sim = Sim(
        map_spec(10, min_success_ratio=0.8),
        behaviour=lambda r: fail(retryable=False) if unlit(r.inputs["x"]) == 3 else add_one(r),
    )
    state = sim.run()
    assert state.phase == "succeeded"
    values = unlit(state.outputs["o0"])
    assert values[3] is None and values[4] == 105


def test_map_fails_as_soon_as_the_ratio_is_unreachable() -> None:
    sim = Sim(
        map_spec(10, min_success_ratio=0.8, concurrency=2),
        behaviour=lambda r: fail(retryable=False) if unlit(r.inputs["x"]) < 3 else add_one(r),
    )
    state = sim.run()
    assert state.phase == "failed"
    assert "3 of 10 map elements failed" in state.error.message
    assert len(sim.submits) < 10  # stopped early


def test_map_concurrency_limits_elements_in_flight() -> None:
    held: list[TaskRequest] = []
    sim = Sim(map_spec(10, concurrency=3), behaviour=lambda r: held.append(r) or None)
    sim.round()
    assert sum(len(request.elements) for request in sim.in_flight.values()) == 3


def test_max_parallelism_caps_running_leaves() -> None:
    spec = spec_of(*[task_node(f"t{i}", "t") for i in range(6)], max_parallelism=2)
    sim = Sim(spec)
    sim.round()
    assert len(sim.submits) == 2
    assert sim.run().phase == "succeeded"


def test_dynamic_node_runs_its_sub_spec_as_children() -> None:
    inner = WorkflowSpec(
        name="dyn",
        inputs=[],
        outputs=out(),
        nodes=[task_node("t", x=LiteralBinding(lit(41)))],
        output_bindings={"o0": OutputRef("t", "o0")},
    )

    def behaviour(request: TaskRequest) -> TaskStatus:
        if request.kind == "dynamic":
            return TaskStatus(phase="succeeded", dynamic_spec=lit(inner))
        return add_one(request)

    dyn = DynamicNode(id="d", task=ref("d"), inputs={}, interface_outputs=out())
    sim = Sim(
        spec_of(dyn, task_node("after", x=OutputRef("d", "o0")), outputs={"o0": OutputRef("after", "o0")}),
        behaviour=behaviour,
    )
    state = sim.run()
    assert unlit(state.outputs["o0"]) == 43
    assert state.nodes["d/t"].phase == "succeeded"
    assert "DynamicExpanded" in sim.kinds("d")
    assert_replays(sim)


def test_a_dynamic_sub_spec_that_does_not_hold_together_fails_the_node_and_nothing_else() -> None:
    """A sub-spec that decodes but binds an output of a node that does not exist (what a worker of
    another version might send) is never recorded: the node fails, and the rounds go on."""
    broken = WorkflowSpec(
        name="dyn",
        inputs=[],
        outputs=out(),
        nodes=[task_node("t", x=OutputRef("nowhere", "o0"))],
        output_bindings={"o0": OutputRef("t", "o0")},
    )

    def behaviour(request: TaskRequest) -> TaskStatus:
        if request.kind == "dynamic":
            return TaskStatus(phase="succeeded", dynamic_spec=lit(broken))
        return add_one(request)

    dyn = DynamicNode(id="d", task=ref("d"), inputs={}, interface_outputs=out())
    sim = Sim(spec_of(dyn, outputs={"o0": OutputRef("d", "o0")}), behaviour=behaviour)
    state = sim.run()
    assert state.phase == "failed"
    assert "DynamicExpanded" not in sim.kinds("d")
    error = state.nodes["d"].error
    assert error is not None and not error.retryable
    assert "node 't' input 'x' takes an output of node 'nowhere'" in error.message
    assert_replays(sim)


def test_nested_dynamic() -> None:
    leaf = WorkflowSpec(
        name="leaf",
        inputs=[],
        outputs=out(),
        nodes=[task_node("t", x=LiteralBinding(lit(1)))],
        output_bindings={"o0": OutputRef("t", "o0")},
    )
    middle = WorkflowSpec(
        name="mid",
        inputs=[],
        outputs=out(),
        nodes=[DynamicNode(id="inner", task=ref("inner"), inputs={}, interface_outputs=out())],
        output_bindings={"o0": OutputRef("inner", "o0")},
    )

    def behaviour(request: TaskRequest) -> TaskStatus:
        if request.kind == "dynamic":
            return TaskStatus(phase="succeeded", dynamic_spec=lit(middle if request.key.node_id == "outer" else leaf))
        return add_one(request)

    sim = Sim(
        spec_of(
            DynamicNode(id="outer", task=ref("outer"), inputs={}, interface_outputs=out()),
            outputs={"o0": OutputRef("outer", "o0")},
        ),
        behaviour=behaviour,
    )
    state = sim.run()
    assert unlit(state.outputs["o0"]) == 2
    assert state.nodes["outer/inner/t"].phase == "succeeded"
    assert_replays(sim)


def test_subworkflow_gets_its_inputs_and_returns_outputs() -> None:
    sub = WorkflowSpec(
        name="sub",
        inputs=[],
        outputs=out(),
        nodes=[task_node("t", x=InputBinding("y"))],
        output_bindings={"o0": OutputRef("t", "o0")},
    )
    node = SubworkflowNode(id="sw", workflow="sub", inputs={"y": OutputRef("a", "o0")}, interface_outputs=out())
    sim = Sim(
        spec_of(
            task_node("a", x=InputBinding("x")), node, outputs={"o0": OutputRef("sw", "o0")}, subworkflows={"sub": sub}
        )
    )
    assert unlit(sim.run().outputs["o0"]) == 3
    assert_replays(sim)


def test_abort_cancels_in_flight_attempts() -> None:
    from engine.events import ExecutionAborted

    sim = Sim(diamond(), behaviour=lambda r: None)
    sim.round()
    assert len(sim.in_flight) == 1
    abort = ExecutionAborted(execution_id="e1", version=sim.state.version + 1, at=sim.now, reason="user")
    sim.record([abort])
    sim.round()
    assert [k.node_id for k in sim.cancels] == ["a"]
    assert sim.state.phase == "aborted"


def test_a_wide_map_round_touches_only_what_changed() -> None:
    """Finishing a chunk of a 100k map must not rescan the other elements, nor give them state."""
    sim = Sim(map_spec(100_000, concurrency=10), behaviour=lambda r: None)
    sim.round()  # expand + launch a chunk of 10
    (first,) = sim.in_flight
    assert len(sim.in_flight[first].elements) == 10
    sim.completions[first] = sim.outcome_now(sim.in_flight[first])
    events_before = len(sim.events)
    sim.round()
    new = sim.events[events_before:]
    # the chunk's start and its results, then exactly one new chunk queued
    assert [type(e).__name__ for e in new] == ["NodeRunning", "ChunkFinished", "ChunkQueued"]
    assert len(sim.state.nodes) == 1 + 1  # the map and its open chunk: elements are compact arrays


def test_chunks_grow_while_elements_are_fast_and_stay_small_while_slow() -> None:
    def sizes(seconds_per_round: float) -> list[int]:
        # chunks start at submit and end one round later: each took one step of the clock
        config = PlannerConfig(starts_on_submit=lambda executor, request: True)
        sim = Sim(map_spec(5_000), config=config, step=timedelta(seconds=seconds_per_round))
        sim.run()
        return [len(request.elements) for request in sim.submits]

    fast, slow = sizes(0.001), sizes(10.0)
    assert fast[0] <= 32 and max(fast) > 32  # starts small, grows while elements are fast
    assert max(slow) <= 32 and slow[-1] == 1  # ~0.3 s per element: one element per chunk


def test_restart_resubmits_queued_attempts_not_in_flight() -> None:
    from propeller import Observations, Submit, plan_round

    sim = Sim(diamond(), behaviour=lambda r: None)
    sim.round()
    reloaded = ExecutionState.fold(sim.events)
    plan = plan_round(reloaded, Observations(now=sim.now, resubmit=True))
    assert plan.events == []
    assert [a.request.key.node_id for a in plan.actions if isinstance(a, Submit)] == ["a"]


def test_stale_completion_is_ignored() -> None:
    sim = Sim(
        spec_of(task_node("a", options=TaskOptions(retries=1, timeout=1))),
        behaviour=lambda r: None,
        config=PlannerConfig(retry_delay=0),
    )
    sim.round()
    sim.now += timedelta(seconds=2)
    sim.round()  # attempt 1 timed out
    from engine.interfaces import TaskKey

    sim.completions[TaskKey("e1", "a", 1)] = add_one(sim.submits[0])
    sim.round()
    assert not any(isinstance(e, NodeSucceeded) and e.attempt == 1 for e in sim.events)


@pytest.mark.parametrize("bad_version", [0, 5])
def test_out_of_order_event_is_an_invalid_transition(bad_version: int) -> None:
    from engine.errors import InvalidTransition
    from engine.events import ExecutionStarted

    sim = Sim(diamond())
    with pytest.raises(InvalidTransition, match="expected version 2"):
        sim.state.apply(ExecutionStarted(execution_id="e1", version=bad_version, at=sim.now))


def test_failure_late_in_a_round_does_not_launch_orphans() -> None:
    """t1 finishing readies t2 in the same round that a map element fails the execution."""
    array = ArrayNode(
        id="m", task=ref("el"), inputs={"x": LiteralBinding(lit([0]))}, mapped=["x"], interface_outputs=out()
    )
    sim = Sim(
        spec_of(task_node("t1"), task_node("t2", x=OutputRef("t1", "o0")), array),
        behaviour=lambda r: fail(retryable=False) if r.key.node_id == "m/0" else add_one(r),
    )
    sim.run()
    assert sim.state.phase == "failed"
    assert "t2" not in [r.key.node_id for r in sim.submits]


def test_timeout_counts_from_the_start_not_from_queueing() -> None:
    """An attempt that waited 10 s for a worker still gets its full 5 s once it runs."""
    from engine.interfaces import TaskKey

    sim = Sim(spec_of(task_node("a", options=TaskOptions(timeout=5))), behaviour=lambda r: None)
    sim.round()  # queued at T0
    key = TaskKey("e1", "a", 1)
    sim.now += timedelta(seconds=4)
    sim.completions[key] = TaskStatus(phase="running", worker="w")
    sim.round()  # the worker picked it up at T0 + 4
    sim.now += timedelta(seconds=3)  # 7 s after queueing, 3 s of running
    sim.round()
    assert sim.state.nodes["a"].phase == "running"
    sim.completions[key] = add_one(sim.submits[0])
    sim.round()
    assert sim.state.phase == "succeeded"


def test_an_attempt_the_executor_lost_is_a_system_failure_and_retried() -> None:
    from engine.interfaces import TaskKey

    sim = Sim(spec_of(task_node("a")), behaviour=lambda r: None, config=PlannerConfig(retry_delay=0))
    sim.round()
    sim.completions[TaskKey("e1", "a", 1)] = TaskStatus(phase="lost")
    sim.round()
    failed = [e for e in sim.events if type(e).__name__ == "NodeFailed"]
    assert failed[0].error.kind == "system"
    assert [r.key.attempt for r in sim.submits] == [1, 2]


def sub_with(policy: str) -> WorkflowSpec:
    return WorkflowSpec(
        name="sub",
        inputs=[],
        outputs=[],
        nodes=[task_node("bad"), task_node("first"), task_node("slow", x=OutputRef("first", "o0"))],
        output_bindings={},
        failure_policy=policy,  # type: ignore[arg-type]
    )


def hold_slow(request: TaskRequest) -> TaskStatus | None:
    if request.key.node_id.endswith("bad"):
        return fail(retryable=False)
    return None if request.key.node_id.endswith("slow") else add_one(request)


def test_a_fail_fast_subworkflow_ends_at_once_inside_a_finish_executable_workflow() -> None:
    node = SubworkflowNode(id="sw", workflow="sub", inputs={}, interface_outputs=[])
    spec = spec_of(
        node, task_node("other"), subworkflows={"sub": sub_with("fail_fast")}, failure_policy="finish_executable"
    )
    sim = Sim(spec, behaviour=hold_slow)
    state = sim.run()
    assert state.phase == "failed"
    assert state.nodes["sw"].phase == "failed"
    assert "sw/slow" not in [r.key.node_id for r in sim.submits]  # ended before it could start
    assert state.nodes["other"].phase == "succeeded"  # the outer workflow ran what it could
    assert_replays(sim)


def test_a_finish_executable_subworkflow_lets_siblings_finish_inside_a_fail_fast_workflow() -> None:
    node = SubworkflowNode(id="sw", workflow="sub", inputs={}, interface_outputs=[])
    spec = spec_of(node, subworkflows={"sub": sub_with("finish_executable")})
    def behaviour(request: TaskRequest) -> TaskStatus | None:
        return add_one(request) if request.key.node_id == "sw/slow" else hold_slow(request)

    sim = Sim(spec, behaviour=behaviour)
    state = sim.run()
    assert state.phase == "failed"
    assert state.nodes["sw/slow"].phase == "succeeded"
    assert sim.cancels == []


def test_dynamic_children_follow_the_policy_of_the_enclosing_workflow() -> None:
    inner = WorkflowSpec(  # compiled sub-specs carry the default policy, fail_fast
        name="dyn",
        inputs=[],
        outputs=[],
        nodes=[task_node("bad"), task_node("first"), task_node("ok", x=OutputRef("first", "o0"))],
        output_bindings={},
    )

    def behaviour(request: TaskRequest) -> TaskStatus | None:
        if request.kind == "dynamic":
            return TaskStatus(phase="succeeded", dynamic_spec=lit(inner))
        return fail(retryable=False) if request.key.node_id == "d/bad" else add_one(request)

    dyn = DynamicNode(id="d", task=ref("d"), inputs={}, interface_outputs=[])
    sim = Sim(spec_of(dyn, failure_policy="finish_executable"), behaviour=behaviour)
    state = sim.run()
    assert state.phase == "failed"
    assert state.nodes["d/ok"].phase == "succeeded"
    assert_replays(sim)
