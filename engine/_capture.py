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
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["LOG_LIMIT", "AttemptLog", "Redactor", "capture", "live_log_path", "live_logs", "read_live_files"]

LOG_LIMIT = 1024 * 1024  # characters kept per attempt


class Redactor:
    """Replaces the values of an attempt's secrets with ``[redacted NAME]`` in text it records.

    Values shorter than `MIN_LENGTH` are left alone: replacing every ``1`` or ``ab`` in a log would
    destroy it and protect nothing.
    """

    MIN_LENGTH = 4

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        # longest first, so that a secret containing another is replaced whole
        self._values = sorted(
            ((value, name) for name, value in (secrets or {}).items() if len(value) >= self.MIN_LENGTH),
            key=lambda pair: -len(pair[0]),
        )

    def __call__(self, text: str) -> str:
        for value, name in self._values:
            if value in text:
                text = text.replace(value, f"[redacted {name}]")
        return text

    def __bool__(self) -> bool:
        return bool(self._values)


NO_SECRETS = Redactor()


class AttemptLog:
    """The output of one attempt, bounded; safe to read from other threads while it is written."""

    def __init__(
        self, label: str, limit: int = LOG_LIMIT, mirror: str | None = None, redact: Redactor | None = None
    ) -> None:
        self.label = label
        self.limit = limit
        self.redact = redact or NO_SECRETS
        self._mirror_path = mirror  # None once mirroring stopped
        self._live_file: Path | None = None  # once created: removed at the end
        self._mirror: TextIO | None = None
        self._mirrored = 0  # characters; the live file stops at twice the log's bound
        self._partial: dict[_Router, str] = {}  # per stream, the start of a line not echoed yet
        self._head: list[str] = []
        self._head_size = 0
        self._tail: deque[str] = deque()
        self._tail_size = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> str:
        """Keep ``text`` (secrets redacted); returns what was kept, for echoing."""
        if not text:
            return text
        if self.redact:
            text = self.redact(text)
        self._keep(text)
        return text

    def _keep(self, text: str) -> None:
        if self._mirror_path is not None:
            self._write_mirror(text)
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

    def _write_mirror(self, text: str) -> None:
        assert self._mirror_path is not None
        try:
            if self._mirror is None:  # the first line: most attempts print nothing and never get here
                path = Path(self._mirror_path)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._mirror = path.open("a", encoding="utf-8")
                self._live_file = path
            if self._mirrored + len(text) > 2 * self.limit:
                self._mirror.write("\n[... the live view stops here; the attempt's log is kept when it ends ...]\n")
                self._mirror.close()
                self._mirror, self._mirror_path = None, None
                return
            self._mirror.write(text)
            self._mirror.flush()
            self._mirrored += len(text)
        except OSError:  # a live view is a courtesy: a full disk must not fail the task
            self._mirror_path = None

    def echo_lines(self, stream: _Router, text: str) -> str:
        """The complete lines that ``text`` ends on ``stream``, each prefixed with the attempt;
        the rest waits for its newline."""
        pending = self._partial.pop(stream, "") + text
        complete, newline, rest = pending.rpartition("\n")
        if rest:
            self._partial[stream] = rest
        if not newline:
            return ""
        return "".join(f"[{self.label}] {line}\n" for line in complete.split("\n"))

    def close(self) -> None:
        """Echo what is left of unfinished lines, stop mirroring and remove the live file (the
        whole log is kept by the engine)."""
        for stream, rest in self._partial.items():
            stream.echo(f"[{self.label}] {rest}\n")
        self._partial.clear()
        if self._mirror is not None:
            with contextlib.suppress(OSError):
                self._mirror.close()
        if self._live_file is not None:
            with contextlib.suppress(OSError):
                self._live_file.unlink(missing_ok=True)

    def text(self) -> str:
        """Everything kept, with a line where characters were dropped."""
        if not self._head:
            return ""  # most attempts print nothing
        with self._lock:
            middle = f"\n[... {self._dropped} characters dropped ...]\n" if self._dropped else ""
            text = "".join(self._head) + middle + "".join(self._tail)
        return self.redact(text) if self.redact else text  # again: a secret may span two writes


_current: contextvars.ContextVar[AttemptLog | None] = contextvars.ContextVar("slipstream_attempt_log", default=None)
_live: dict[str, AttemptLog] = {}  # label -> log, for attempts running in this process
_install_lock = threading.Lock()
_handler_installed = False


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: to the current attempt's log, if any."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        log = _current.get()
        if log is None:
            return self.original.write(text)
        lines = log.echo_lines(self, log.write(text))
        if lines:
            self.echo(lines)
        return len(text)

    def echo(self, text: str) -> None:
        """Whole lines at once: tasks in other threads print too, and ``print`` writes a line's
        text and its newline separately."""
        with contextlib.suppress(Exception):  # echoing is a courtesy; a closed stream must not fail the task
            self.original.write(text)

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
    global _handler_installed
    if type(sys.stdout) is _Router and type(sys.stderr) is _Router and _handler_installed:
        return  # every attempt passes here: the common case takes no lock
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
        _handler_installed = True


@contextlib.contextmanager
def capture(label: str, live: str | None = None, redact: Redactor | None = None) -> Iterator[AttemptLog]:
    """Route this thread's (or asyncio task's) output into a new log while the block runs, also
    appended to the file ``live`` (removed at the end) for readers in other processes; ``redact``
    hides secret values in everything kept or echoed."""
    _install()
    log = AttemptLog(label, mirror=live, redact=redact)
    token = _current.set(log)
    _live[label] = log
    try:
        yield log
    finally:
        _current.reset(token)
        _live.pop(label, None)
        log.close()


def live_log_path(directory: str, execution_id: str, node_id: str, attempt: int) -> str | None:
    """Where an attempt mirrors its output under ``directory`` (None for no mirror). A string: a
    `Path` costs more than most attempts' bodies, and most attempts print nothing."""
    if not directory:
        return None
    return os.path.join(directory, _safe(execution_id), f"{_safe(node_id)}#{attempt}.log")


def read_live_files(directory: str | Path, execution_id: str) -> dict[tuple[str, int], str]:
    """The mirrored output of an execution's running attempts, by (node id, attempt)."""
    folder = Path(directory) / _safe(execution_id)
    found: dict[tuple[str, int], str] = {}
    for path in folder.glob("*.log") if folder.is_dir() else ():
        name, _, attempt = path.stem.rpartition("#")
        with contextlib.suppress(OSError, ValueError):
            found[(_unsafe(name), int(attempt))] = path.read_text(encoding="utf-8", errors="replace")
    return found


def _safe(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2F").replace("#", "%23")


def _unsafe(name: str) -> str:
    return name.replace("%23", "#").replace("%2F", "/").replace("%25", "%")


def live_logs() -> dict[str, AttemptLog]:
    """Logs of the attempts running in this process now, by label (``<execution> <node>#<attempt>``)."""
    return dict(_live)
