"""What an attempt prints: its stdout, stderr and `current_context().logger` records, kept per attempt.

Sync tasks share a process with other tasks (threads of the local executor, several actors' calls),
so a process-wide redirect of ``sys.stdout`` cannot tell them apart by itself. Instead the streams
are replaced once by routers that look up the current attempt in a context variable: each thread,
and each asyncio task, sees its own, so two tasks printing at once land in their own logs. Writes
outside any attempt go to the original stream unchanged. A captured line is also echoed to the
original stream, prefixed with the attempt, so the process that runs tasks still shows them.

An attempt keeps at most `LOG_LIMIT` characters: the first half and the last half of what it wrote,
with a line saying how much was dropped between them (the start says what it was doing, the end
why it failed).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator
from typing import TextIO

__all__ = ["LOG_LIMIT", "AttemptLog", "capture", "live_logs"]

LOG_LIMIT = 1024 * 1024  # characters kept per attempt


class AttemptLog:
    """The output of one attempt, bounded; safe to read from other threads while it is written."""

    def __init__(self, label: str, limit: int = LOG_LIMIT) -> None:
        self.label = label
        self.limit = limit
        self._head: list[str] = []
        self._head_size = 0
        self._tail: deque[str] = deque()
        self._tail_size = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            room = self.limit // 2 - self._head_size
            if room > 0:
                self._head.append(text[:room])
                self._head_size += min(len(text), room)
                text = text[room:]
            if not text:
                return
            self._tail.append(text)
            self._tail_size += len(text)
            while self._tail_size > self.limit // 2:
                first = self._tail[0]
                excess = self._tail_size - self.limit // 2
                if len(first) <= excess:
                    self._tail.popleft()
                    self._tail_size -= len(first)
                    self._dropped += len(first)
                else:
                    self._tail[0] = first[excess:]
                    self._tail_size -= excess
                    self._dropped += excess

    def text(self) -> str:
        """Everything kept, with a line where characters were dropped."""
        with self._lock:
            middle = f"\n[... {self._dropped} characters dropped ...]\n" if self._dropped else ""
            return "".join(self._head) + middle + "".join(self._tail)


_current: contextvars.ContextVar[AttemptLog | None] = contextvars.ContextVar("slipstream_attempt_log", default=None)
_live: dict[str, AttemptLog] = {}  # label -> log, for attempts running in this process
_install_lock = threading.Lock()


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: to the current attempt's log, if any."""

    def __init__(self, original: TextIO) -> None:
        self.original = original
        self._at_line_start = threading.local()

    def write(self, text: str) -> int:
        log = _current.get()
        if log is None:
            return self.original.write(text)
        log.write(text)
        with contextlib.suppress(Exception):  # echoing is a courtesy; a closed stream must not fail the task
            self.original.write(self._prefixed(log.label, text))
        return len(text)

    def _prefixed(self, label: str, text: str) -> str:
        at_start = getattr(self._at_line_start, "value", True)
        lines = text.splitlines(keepends=True)
        out = "".join((f"[{label}] " if (i > 0 or at_start) else "") + line for i, line in enumerate(lines))
        self._at_line_start.value = text.endswith("\n")
        return out

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


class _LogHandler(logging.Handler):
    """Writes task logger records into the current attempt's log."""

    def emit(self, record: logging.LogRecord) -> None:
        log = _current.get()
        if log is not None:
            log.write(self.format(record) + "\n")


def _install() -> None:
    with _install_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)  # type: ignore[assignment]
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)  # type: ignore[assignment]
        tasks = logging.getLogger("slipstream.task")
        if not any(isinstance(h, _LogHandler) for h in tasks.handlers):
            handler = _LogHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            tasks.addHandler(handler)
            if tasks.level == logging.NOTSET:
                tasks.setLevel(logging.INFO)  # a task's info lines are what its log is for


@contextlib.contextmanager
def capture(label: str) -> Iterator[AttemptLog]:
    """Route this thread's (or asyncio task's) output into a new log while the block runs."""
    _install()
    log = AttemptLog(label)
    token = _current.set(log)
    _live[label] = log
    try:
        yield log
    finally:
        _current.reset(token)
        _live.pop(label, None)


def live_logs() -> dict[str, AttemptLog]:
    """Logs of the attempts running in this process now, by label (``<execution> <node>#<attempt>``)."""
    return dict(_live)
