"""`TaskContext`: what a running task knows about itself, via `current_context()`.

``engine.runtime`` binds a context around each task call with `bind_context` (in the worker thread,
in the worker process, or inside the asyncio task of an async task); a `contextvars.ContextVar`
carries it, so concurrent tasks on one loop or in one thread pool each see their own. Executors use
``engine.runtime``, never this module.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import msgspec

from engine.errors import NoTaskContext

__all__ = ["NoTaskContext", "TaskContext", "bind_context", "current_context", "read_secrets"]


class TaskContext(msgspec.Struct, frozen=True, kw_only=True):
    """The context of one task attempt.

    Attributes:
        execution_id: the execution the attempt belongs to.
        node_id: the node path (``train``, ``prune/train-2``, ``map/17``).
        attempt: the attempt number (1 for the first run).
        gpu_ids: GPU ids assigned to this attempt by the executor (empty when none were reserved).
        secrets: the task's declared secrets, by name (an attempt whose declared secret is not set
            fails before the task runs).
        project: the execution's project.
        domain: the execution's domain.
    """

    execution_id: str
    node_id: str
    attempt: int
    gpu_ids: list[str] = []
    secrets: dict[str, str] = {}
    project: str = "default"
    domain: str = "development"

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named ``slipstream.task.<node_id>`` whose records carry the attempt's ids.

        The ids are set as ``execution_id``, ``node_id`` and ``attempt`` attributes of each
        `logging.LogRecord`, for formatters and handlers to use.
        """
        return logging.LoggerAdapter(
            logging.getLogger(f"slipstream.task.{self.node_id}"),
            {"execution_id": self.execution_id, "node_id": self.node_id, "attempt": self.attempt},
        )

    def __repr__(self) -> str:
        # never print secret values (tracebacks and logs show reprs)
        return (
            f"TaskContext(execution_id={self.execution_id!r}, node_id={self.node_id!r}, "
            f"attempt={self.attempt}, gpu_ids={self.gpu_ids!r}, secrets={sorted(self.secrets)!r}, "
            f"project={self.project!r}, domain={self.domain!r})"
        )


_current: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("slipstream_task_context")


def current_context() -> TaskContext:
    """The context of the task attempt running in this thread, process or asyncio task.

    Returns:
        The `TaskContext` the executor bound around the task call.

    Raises:
        NoTaskContext: if no task is running here.
    """
    try:
        return _current.get()
    except LookupError:
        raise NoTaskContext() from None


@contextmanager
def bind_context(context: TaskContext) -> Iterator[TaskContext]:
    """Make ``context`` the `current_context()` for the duration of the ``with`` block.

    For ``engine.runtime``. The previous value is restored on exit, so pooled threads carry
    nothing over.

    Args:
        context: the attempt's context.

    Yields:
        ``context``.
    """
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def read_secrets(names: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Resolve a task's declared secrets from the environment of the engine process.

    Each name is read from the environment variable of the same name; names that are not set are
    left out (``engine.runtime`` then fails the attempt with a message naming them).

    Args:
        names: the task's ``secrets`` option.
        environ: where to look; ``os.environ`` by default.

    Returns:
        The secrets that were found, by name.
    """
    env = os.environ if environ is None else environ
    return {name: env[name] for name in names if name in env}
