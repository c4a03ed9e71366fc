"""A deterministic, in-memory driver for the pure planner: no store, no executor, a stepped clock.

Tasks are faked by name: ``behaviour(request) -> TaskStatus`` decides each attempt's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec

from engine.events import ElementResult, Event, ExecutionCreated
from engine.interfaces import TaskKey, TaskRequest, TaskStatus
from engine.models import (
    ArrayNode,
    Binding,
    DynamicNode,
    InputBinding,
    LiteralBinding,
    OutputRef,
    TaskNode,
    TaskOptions,
    TaskRef,
    TypedName,
    WorkflowSpec,
)
from engine.state import ExecutionState
from propeller import Cancel, Observations, PlannerConfig, Submit, plan_round

T0 = datetime(2026, 1, 1, tzinfo=UTC)
lit = msgspec.msgpack.encode
unlit = msgspec.msgpack.decode


def ref(name: str) -> TaskRef:
    return TaskRef(name=name, module="sim", qualname=name, source_hash="h")


def out(name: str = "o0") -> list[TypedName]:
    return [TypedName(name, "int")]


def task_node(node_id: str, task: str | None = None, options: TaskOptions | None = None, **inputs: Binding) -> TaskNode:
    return TaskNode(
        id=node_id, task=ref(task or node_id), inputs=inputs, interface_outputs=out(), options=options or TaskOptions()
    )


def spec_of(*nodes, outputs: dict[str, Binding] | None = None, **kw) -> WorkflowSpec:
    return WorkflowSpec(
        name="wf",
        inputs=[TypedName("x", "int")],
        outputs=[TypedName(k, "int") for k in (outputs or {})],
        nodes=list(nodes),
        output_bindings=outputs or {},
        **kw,
    )


def add_one(request: TaskRequest) -> TaskStatus:
    """Default behaviour: o0 = sum of int inputs + 1 (lists summed)."""

    def flat(value: object) -> int:
        if isinstance(value, list):
            return sum(flat(item) for item in value)
        return value if isinstance(value, int) else 0

    total = sum(flat(unlit(value)) for value in request.inputs.values())
    return TaskStatus(phase="succeeded", outputs={"o0": lit(total + 1)}, worker="sim")


class Sim:
    def __init__(
        self,
        spec: WorkflowSpec,
        inputs: dict[str, bytes] | None = None,
        behaviour: Callable[[TaskRequest], TaskStatus | None] = add_one,
        config: PlannerConfig | None = None,
        step: timedelta = timedelta(seconds=1),
    ) -> None:
        self.state = ExecutionState()
        self.events: list[Event] = []
        self.behaviour = behaviour
        self.config = config or PlannerConfig(retry_delay=1.0)
        self.now = T0
        self.step = step
        self.in_flight: dict[TaskKey, TaskRequest] = {}
        self.completions: dict[TaskKey, TaskStatus] = {}
        self.submits: list[TaskRequest] = []
        self.cancels: list[TaskKey] = []
        self.rounds = 0
        self.check_fold = True
        created = ExecutionCreated(
            execution_id="e1",
            version=1,
            at=T0,
            project="p",
            domain="d",
            workflow="wf",
            workflow_version="v",
            spec=spec,
            inputs=inputs if inputs is not None else {"x": lit(1)},
        )
        self.record([created])

    def record(self, events: list[Event]) -> None:
        self.events.extend(events)
        if events and self.state.version < events[-1].version:
            ExecutionState.fold(events, self.state)

    def round(self) -> None:
        self.rounds += 1
        obs = Observations(now=self.now, completions=dict(self.completions), in_flight=set(self.in_flight))
        self.completions.clear()
        plan = plan_round(self.state, obs, self.config)
        self.events.extend(plan.events)
        if self.check_fold:
            # the state the planner advanced must be exactly the fold of the log it wrote
            assert self.state == ExecutionState.fold(self.events), f"state diverged from the log at round {self.rounds}"
        for action in plan.actions:
            if isinstance(action, Submit):
                key = action.request.key
                self.submits.append(action.request)
                self.in_flight[key] = action.request
                status = self.outcome(action.request)
                if status is not None:
                    self.completions[key] = status
            elif isinstance(action, Cancel):
                self.cancels.append(action.key)
                self.in_flight.pop(action.key, None)
                self.completions.pop(action.key, None)
        for key in obs.completions:
            self.in_flight.pop(key, None)

    def outcome_now(self, request: TaskRequest) -> TaskStatus:
        """What the default behaviour gives for an attempt held so far (elements: add_one)."""
        behaviour, self.behaviour = self.behaviour, add_one
        try:
            status = self.outcome(request)
        finally:
            self.behaviour = behaviour
        assert status is not None
        return status

    def outcome(self, request: TaskRequest) -> TaskStatus | None:
        """The behaviour's status for an attempt; a chunk gathers one per element (None: in flight)."""
        if not request.elements:
            return self.behaviour(request)
        array_id = request.key.node_id.rpartition("/")[0]
        results = []
        for position, (index, attempt) in enumerate(zip(request.elements, request.element_attempts, strict=True)):
            inputs = dict(request.inputs) | {name: values[position] for name, values in request.mapped.items()}
            key = TaskKey(request.key.execution_id, f"{array_id}/{index}", attempt)
            status = self.behaviour(msgspec.structs.replace(request, key=key, inputs=inputs, elements=[], mapped={}))
            if status is None:
                return None
            output = status.outputs.get("o0") if status.phase == "succeeded" else None
            results.append(ElementResult(index, attempt, output, status.error if status.phase == "failed" else None))
        return TaskStatus(phase="succeeded", elements=results, worker="sim")

    def run(self, max_rounds: int = 500) -> ExecutionState:
        while not self.state.is_terminal and self.rounds < max_rounds:
            self.round()
            self.now += self.step
        if self.state.is_terminal and self.in_flight:
            self.round()
        return self.state

    def kinds(self, node_id: str | None = None) -> list[str]:
        return [type(e).__name__ for e in self.events if node_id is None or e.node_id == node_id]


__all__ = [
    "T0",
    "ArrayNode",
    "DynamicNode",
    "InputBinding",
    "LiteralBinding",
    "OutputRef",
    "Sim",
    "TaskOptions",
    "add_one",
    "lit",
    "out",
    "ref",
    "spec_of",
    "task_node",
    "unlit",
]
