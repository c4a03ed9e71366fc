"""What a round asks the world to do once its events are durable: the `Action` union.

The planner returns actions; the controller carries them out, in order, through one dispatcher
(`propeller._attempts.Attempts.dispatch`) after the round's append. Every kind is idempotent, since
a round may be planned again after a crash:

- `Submit`: hand an attempt to an executor (idempotent per ``(execution, node, attempt)``).
- `Cancel`: stop an attempt the log no longer wants (unknown attempts are ignored; a cancel that
  fails is tried again at the next round).
- `Release`: the attempt's start is durable (``NodeRunning`` appended): its body may run. Executors
  whose workers share the engine's process wait for it, so that a task that kills the process is
  found on restart as a started attempt rather than submitted again forever.

Later kinds (a catalog lookup before a launch, a cache reservation, an artifact publication) join
this union and the dispatcher, not the controller's round.
"""

from __future__ import annotations

import msgspec

from engine.interfaces import TaskKey, TaskRequest

__all__ = ["Action", "Cancel", "Release", "Submit"]


class Submit(msgspec.Struct, frozen=True):
    """Hand ``request`` to the executor named ``executor``."""

    request: TaskRequest
    executor: str


class Cancel(msgspec.Struct, frozen=True):
    """Stop the attempt ``key`` (``handle``: its durable id, when it started) and forget it."""

    key: TaskKey
    executor: str
    handle: str = ""


class Release(msgspec.Struct, frozen=True):
    """The start of attempt ``key`` is durable: let the executor run its body."""

    key: TaskKey
    executor: str


Action = Submit | Cancel | Release
