"""A map node's elements as compact arrays (part of the fold; floor: no I/O, no imports of ours
outside the floor).

After flytepropeller's ``bitarray.CompactArray``: one byte of phase, one attempt counter and two
failure counters per element, the output literals in one list, and errors only for the elements
that have one. A million-element map costs a few megabytes of state and no object per element, and
every counter the planner needs (in flight, succeeded, failed, the launch cursor) is kept up to
date as elements move, so no round scans the elements.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from engine.literals import NIL_LITERAL
from engine.models import ErrorInfo, TaskOptions

__all__ = ["FAILED", "IN_FLIGHT", "RETRYING", "SUCCEEDED", "WAITING", "ArrayState", "ChunkState"]

# element phases, one byte each
WAITING, IN_FLIGHT, RETRYING, SUCCEEDED, FAILED = range(5)
PHASE_NAMES = ("waiting", "in flight", "retrying", "succeeded", "failed")


@dataclass(slots=True, eq=False)
class ChunkState:
    """The elements one chunk (a job on an executor) runs, with each element's attempt."""

    elements: list[int]
    attempts: list[int]


@dataclass(slots=True, eq=False)
class ArrayState:
    """A map node's elements, tracked by compact arrays and counters so no round rescans them."""

    size: int
    mapped: dict[str, list[bytes]]  # input name -> element literals
    broadcast: dict[str, bytes]
    phases: bytearray = field(default_factory=bytearray)
    attempts: array[int] = field(default_factory=lambda: array("I"))
    user_failures: bytearray = field(default_factory=bytearray)
    system_failures: bytearray = field(default_factory=bytearray)
    outputs: list[bytes | None] = field(default_factory=list)
    errors: dict[int, ErrorInfo] = field(default_factory=dict)  # failed or retrying elements
    retrying: dict[int, datetime] = field(default_factory=dict)  # element -> when it failed, in order
    next_index: int = 0  # elements below it left `waiting` at least once
    in_flight: int = 0  # elements queued, running or retrying
    succeeded: int = 0
    failed: int = 0
    first_failure: ErrorInfo | None = None
    chunks: int = 0  # chunks queued so far; the next is numbered chunks + 1
    open_chunks: int = 0  # chunks queued or running
    # measured mean seconds per element of finished chunks (None until one finished): the
    # planner sizes chunks from it
    element_seconds: float | None = None

    @classmethod
    def new(cls, size: int, mapped: dict[str, list[bytes]], broadcast: dict[str, bytes]) -> ArrayState:
        return cls(
            size=size,
            mapped=mapped,
            broadcast=broadcast,
            phases=bytearray(size),
            attempts=array("I", bytes(4 * size)),
            user_failures=bytearray(size),
            system_failures=bytearray(size),
            outputs=[None] * size,
        )

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    def element_inputs(self, index: int) -> dict[str, bytes]:
        inputs = dict(self.broadcast)
        for name, elements in self.mapped.items():
            inputs[name] = elements[index]
        return inputs

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.size,
            bytes(self.phases),
            self.attempts.tobytes(),
            bytes(self.user_failures),
            bytes(self.system_failures),
            tuple(self.outputs),
            tuple(sorted(self.errors.items())),
            tuple(self.retrying.items()),
            self.next_index,
            self.in_flight,
            self.succeeded,
            self.failed,
            self.first_failure,
            self.chunks,
            self.open_chunks,
            self.element_seconds,
        )

    # -- transitions (the fold calls these; each returns why it cannot happen, or "") ------------

    def claim(self, index: int, attempt: int) -> str:
        """Element ``index`` starts attempt ``attempt`` (from waiting, or retrying)."""
        if not 0 <= index < self.size:
            return f"element {index} is out of range (size {self.size})"
        phase = self.phases[index]
        if phase == WAITING:
            self.in_flight += 1
        elif phase == RETRYING:
            del self.retrying[index]
        else:
            return f"element {index} is {PHASE_NAMES[phase]}"
        if attempt != self.attempts[index] + 1:
            return f"element {index}: attempt {attempt} does not follow attempt {self.attempts[index]}"
        self.phases[index] = IN_FLIGHT
        self.attempts[index] = attempt
        self._advance_cursor()
        return ""

    def reuse(self, index: int, output: bytes | None) -> str:
        """Element ``index`` takes an output it had elsewhere (recovery, a cache hit)."""
        if not 0 <= index < self.size:
            return f"element {index} is out of range (size {self.size})"
        phase = self.phases[index]
        if phase == WAITING:
            self.in_flight += 1
        elif phase == RETRYING:
            del self.retrying[index]
        else:
            return f"element {index} is {PHASE_NAMES[phase]}"
        self.phases[index] = IN_FLIGHT
        self._advance_cursor()
        self.succeed(index, output)
        return ""

    def succeed(self, index: int, output: bytes | None) -> None:
        self.phases[index] = SUCCEEDED
        self.outputs[index] = NIL_LITERAL if output is None else output
        self.errors.pop(index, None)
        self.in_flight -= 1
        self.succeeded += 1

    def fail(self, index: int, error: ErrorInfo, at: datetime, options: TaskOptions, element_id: str) -> None:
        """Element ``index`` failed its attempt: it retries on its own budgets, or fails for good."""
        if error.kind == "system":
            self.system_failures[index] = min(self.system_failures[index] + 1, 255)
            budget_left = self.system_failures[index] <= options.system_retries
        else:
            self.user_failures[index] = min(self.user_failures[index] + 1, 255)
            budget_left = self.user_failures[index] <= options.retries
        if not error.node_id:
            error = msgspec.structs.replace(error, node_id=element_id)
        self.errors[index] = error
        if error.retryable and budget_left:
            self.phases[index] = RETRYING
            self.retrying[index] = at
            return
        self.phases[index] = FAILED
        self.in_flight -= 1
        self.failed += 1
        if self.first_failure is None:
            self.first_failure = error

    def failures(self, index: int) -> int:
        return self.user_failures[index] + self.system_failures[index]

    def check(self, attempts: dict[int, int], index: int, attempt: int) -> str:
        """Why a result for ``index``/``attempt`` does not belong to a chunk whose elements have
        ``attempts`` (element -> attempt); "" if it does."""
        if attempts.get(index) != attempt or self.phases[index] != IN_FLIGHT:
            return f"element {index} attempt {attempt} is not in flight in the chunk"
        return ""

    def measure(self, seconds: float, elements: int) -> None:
        """A chunk of ``elements`` took ``seconds`` from its start to its end (a moving mean)."""
        per_element = max(seconds, 0.0) / max(elements, 1)
        previous = self.element_seconds
        self.element_seconds = per_element if previous is None else (previous + per_element) / 2

    def _advance_cursor(self) -> None:
        while self.next_index < self.size and self.phases[self.next_index] != WAITING:
            self.next_index += 1
