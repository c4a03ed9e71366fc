"""The invariants every fault must leave intact, counted (so that a summary line can report them)
rather than asserted one by one: versions without a gap, no node and no map element succeeding twice,
the expected terminal state, and every committed event on the stream once per Msg-Id."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.events import (
    AnyEvent,
    ChunkFinished,
    ElementsReused,
    ExecutionAborted,
    ExecutionFailed,
    ExecutionSucceeded,
    NodeCacheHit,
    NodeRecovered,
    NodeSucceeded,
)
from engine.state import ExecutionState
from plugins.nats import msg_id
from tests.plugins._stream import Message

_TERMINAL = (ExecutionSucceeded, ExecutionFailed, ExecutionAborted)


@dataclass
class Audit:
    """What the logs (and the stream) of a fault's executions showed."""

    executions: int = 0
    completed: int = 0  # reached the terminal state expected of them
    lost: int = 0  # versions missing from a log, committed events missing from the stream
    duplicates: int = 0  # a node or map element succeeding twice, a Msg-Id delivered twice
    problems: list[str] = field(default_factory=list)
    states: dict[str, ExecutionState] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"executions completed {self.completed}/{self.executions}, events lost {self.lost}, "
            f"duplicates {self.duplicates}"
        )


def audit_log(audit: Audit, events: Sequence[AnyEvent], expected: str) -> ExecutionState | None:
    """Check one execution's whole log into ``audit``; its folded state (None for an empty log)."""
    audit.executions += 1
    if not events:
        audit.problems.append("an execution has an empty log")
        return None
    execution_id = events[0].execution_id
    versions = [e.version for e in events]
    missing = sorted(set(range(1, max(versions) + 1)) - set(versions))
    if missing or versions != sorted(set(versions)):
        audit.lost += len(missing)
        audit.problems.append(f"{execution_id}: versions not 1..n in order (missing {missing[:5]})")
    nodes = Counter(e.node_id for e in events if isinstance(e, NodeSucceeded | NodeCacheHit | NodeRecovered))
    elements = Counter(
        (e.node_id, r.index)
        for e in events
        if isinstance(e, ChunkFinished | ElementsReused)
        for r in e.results
        if r.error is None
    )
    twice = [node for node, n in nodes.items() if n > 1]
    twice += [f"{node}[{i}]" for (node, i), n in elements.items() if n > 1]
    if twice:
        audit.duplicates += len(twice)
        audit.problems.append(f"{execution_id}: succeeded more than once: {twice[:5]}")
    ends = [e for e in events if isinstance(e, _TERMINAL)]
    state = ExecutionState.fold(events)
    audit.states[execution_id] = state
    if state.phase != expected or len(ends) != 1:
        audit.problems.append(f"{execution_id}: ended {state.phase!r} ({len(ends)} terminal events), not {expected!r}")
    else:
        audit.completed += 1
    return state


def audit_stream(audit: Audit, messages: Sequence[Message], log: Sequence[AnyEvent]) -> None:
    """Every committed event of ``log`` delivered, and each Msg-Id once, carrying that very event."""
    by_id = Counter(m.msg_id for m in messages)
    twice = [i for i, n in by_id.items() if n > 1]
    committed = {msg_id(e.execution_id, e.version): e for e in log}
    undelivered = [i for i in committed if i not in by_id]
    audit.duplicates += sum(by_id[i] - 1 for i in twice)
    audit.lost += len(undelivered)
    if twice:
        audit.problems.append(f"Msg-Ids delivered more than once: {twice[:5]}")
    if undelivered:
        audit.problems.append(f"{len(undelivered)} committed events never delivered: {undelivered[:5]}")
    altered = [m.msg_id for m in messages if m.msg_id in committed and committed[m.msg_id] != m.event]
    if altered:
        audit.problems.append(f"messages that differ from the committed event: {altered[:5]}")
    strays = [m.msg_id for m in messages if m.msg_id not in committed]
    if strays:
        audit.problems.append(f"messages of no committed event: {strays[:5]}")
