"""The cache step of the pure planner (propeller/_cache.py): a cached node asks the catalog before it
launches (an action, no I/O), stays ready until the answer is observed, then is served (NodeCacheHit,
ElementsReused) or launches; its outputs are recorded after it succeeds. No catalog here: the tests
play its answers (the catalog's own contract is tests/contract/test_catalog_contract.py)."""

from __future__ import annotations

from datetime import timedelta

from engine.events import ElementsReused, ExecutionCreated, NodeCacheHit
from engine.interfaces import Artifact, TaskKey, TaskStatus
from engine.models import WorkflowSpec
from engine.state import ExecutionState
from propeller import CacheLookup, CacheOutcome, CachePut, Observations, Plan, PlannerConfig, Submit, plan_round

from ._sim import T0, ArrayNode, InputBinding, TaskOptions, lit, out, ref, spec_of, task_node

CACHED = TaskOptions(cache=True, cache_version="1", cache_interface="sig")
CONFIG = PlannerConfig(caching=True, cache_wait=0.5)


class Run:
    """One execution planned round by round; ``events`` is its log."""

    def __init__(self, spec: WorkflowSpec, x: object = 1, execution_id: str = "e1") -> None:
        event = ExecutionCreated(
            execution_id=execution_id, version=1, at=T0, project="p", domain="d", workflow="wf",
            workflow_version="v", spec=spec, inputs={"x": lit(x)},
        )  # fmt: skip
        self.events: list[object] = [event]
        self.state = ExecutionState.fold([event])

    def plan(self, observations: Observations) -> Plan:
        plan = plan_round(self.state, observations, CONFIG)
        self.events += plan.events
        assert self.state == ExecutionState.fold(self.events)  # type: ignore[arg-type]
        return plan


def artifact_of(put: CachePut) -> Artifact:
    draft = put.drafts[0]
    return Artifact(
        id=draft.artifact_id, dataset=draft.key.dataset, key=draft.key.digest, input_hash=draft.key.inputs,
        outputs=draft.outputs, execution_id=draft.execution_id, node_id=draft.node_id, attempt=draft.attempt,
        created_at=T0,
    )  # fmt: skip


def test_a_cached_task_asks_first_then_runs_and_is_recorded() -> None:
    run = Run(spec_of(task_node("a", options=CACHED, x=InputBinding("x"))))
    plan = run.plan(Observations(now=T0))
    [lookup] = plan.actions
    assert isinstance(lookup, CacheLookup) and lookup.node_id == "a" and not lookup.reserve
    assert [type(e).__name__ for e in plan.events] == ["ExecutionStarted"]  # the node waits, ready
    assert "a" in run.state.ready
    assert run.plan(Observations(now=T0, cache_pending={"a"})).actions == []  # asked already
    plan = run.plan(Observations(now=T0, cache={"a": CacheOutcome([None])}))
    assert [type(a) for a in plan.actions] == [Submit] and run.state.nodes["a"].phase == "queued"
    done = {TaskKey("e1", "a", 1): TaskStatus(phase="succeeded", outputs={"o0": lit(2)})}
    plan = run.plan(Observations(now=T0, completions=done))
    [put] = [a for a in plan.actions if isinstance(a, CachePut)]
    assert put.drafts[0].outputs == {"o0": lit(2)} and put.drafts[0].key == lookup.keys[0]
    assert run.state.phase == "succeeded"

    # another execution with the same input is served by that record and runs nothing
    other = Run(spec_of(task_node("a", options=CACHED, x=InputBinding("x"))), execution_id="e2")
    [again] = other.plan(Observations(now=T0)).actions
    assert isinstance(again, CacheLookup) and again.keys == lookup.keys
    plan = other.plan(Observations(now=T0, cache={"a": CacheOutcome([artifact_of(put)])}))
    hits = [e for e in plan.events if isinstance(e, NodeCacheHit)]
    assert [h.artifact for h in hits] == [put.drafts[0].artifact_id]
    assert not [a for a in plan.actions if isinstance(a, Submit)] and other.state.phase == "succeeded"
    # a different input is another key
    assert (
        Run(spec_of(task_node("a", options=CACHED, x=InputBinding("x"))), x=2)
        .plan(Observations(now=T0))
        .actions[0]
        .keys
        != lookup.keys
    )  # type: ignore[union-attr]


def test_a_failed_catalog_means_running_uncached() -> None:
    run = Run(spec_of(task_node("a", options=CACHED, x=InputBinding("x"))))
    run.plan(Observations(now=T0))
    plan = run.plan(Observations(now=T0, cache={"a": CacheOutcome([], error="down")}))
    assert [type(a) for a in plan.actions] == [Submit]


def test_serialized_nodes_wait_for_the_holder() -> None:
    options = TaskOptions(cache=True, cache_serialize=True, cache_interface="sig")
    run = Run(spec_of(task_node("a", options=options, x=InputBinding("x"))))
    [lookup] = run.plan(Observations(now=T0)).actions
    assert isinstance(lookup, CacheLookup) and lookup.reserve and lookup.owner == "e1/a"
    plan = run.plan(Observations(now=T0, cache={"a": CacheOutcome([None], holder="e9/a")}))
    assert plan.actions == [] and plan.wake_at == T0 + timedelta(seconds=0.5) and "a" in run.state.ready
    later = T0 + timedelta(seconds=1)
    [again] = run.plan(Observations(now=later)).actions
    assert isinstance(again, CacheLookup)
    plan = run.plan(Observations(now=later, cache={"a": CacheOutcome([None], holder="e1/a")}))
    assert [type(a) for a in plan.actions] == [Submit]


def test_a_map_reuses_its_cached_elements_and_runs_the_rest() -> None:
    array = ArrayNode(id="m", task=ref("sq"), inputs={"x": InputBinding("x")}, mapped=["x"], interface_outputs=out(),
                      options=CACHED)  # fmt: skip
    run = Run(spec_of(array), x=[10, 20, 30])
    [lookup] = run.plan(Observations(now=T0)).actions
    assert isinstance(lookup, CacheLookup) and lookup.indices == [0, 1, 2] and len(set(lookup.keys)) == 3
    hit = Artifact(
        id="art1", dataset=lookup.keys[1].dataset, key=lookup.keys[1].digest, input_hash="", outputs={"o0": lit(400)},
        execution_id="old", node_id="m/0", attempt=1, created_at=T0,
    )  # fmt: skip
    plan = run.plan(Observations(now=T0, cache={"m": CacheOutcome([None, hit, None], indices=[0, 1, 2])}))
    [reused] = [e for e in plan.events if isinstance(e, ElementsReused)]
    assert reused.source == "cache" and reused.artifacts == ["art1"] and [r.index for r in reused.results] == [1]
    submitted = [a.request for a in plan.actions if isinstance(a, Submit)]
    assert sorted(i for r in submitted for i in r.elements) == [0, 2]
