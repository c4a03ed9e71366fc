"""Job directories: where the built-in agents keep what a job id names, so that another instance
of the agent (a restarted engine, another process) finds the job by its id alone."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from engine.interfaces import TaskKey

__all__ = ["default_directory", "job_id_for", "job_path", "write_atomic"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_JOB_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}")


def default_directory(agent: str) -> Path:
    """``$SLIPSTREAM_STATE_DIR/agents/<agent>``, else ``~/.slipstream/agents/<agent>``."""
    state = os.environ.get("SLIPSTREAM_STATE_DIR")
    return (Path(state) if state else Path.home() / ".slipstream") / "agents" / agent


def job_id_for(key: TaskKey) -> str:
    """The job id of an attempt: readable, unique per key, the same every time (``create`` is
    idempotent because of it)."""
    digest = hashlib.sha256(f"{key.execution_id}\0{key.node_id}\0{key.attempt}".encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("_", f"{key.execution_id}-{key.node_id}-{key.attempt}")[:120].lstrip(".")
    return f"{readable}-{digest}"


def job_path(directory: Path, job_id: str) -> Path | None:
    """Where the job ``job_id`` lives under ``directory``; None for an id that is not one of ours
    (nothing outside the directory is ever named by an id)."""
    if not isinstance(job_id, str) or _JOB_ID.fullmatch(job_id) is None:
        return None
    return directory / job_id


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees all of it or nothing."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
