"""`FileSensor` (``file_sensor``): a task attempt that waits until a file exists.

A job is a directory ``<directory>/<job id>`` holding the path it waits for; any instance of the
agent that shares the directory (a restarted engine) goes on waiting for it. The job succeeds when
the path exists, with the path as its value (for a task ``-> str``); it waits until then, so bound
it with the task's ``timeout=``.

Settings (``@agent("file_sensor", ...)``):

- ``path``: the path to wait for; ``{name}`` is replaced by the task input ``name`` (default
  ``"{path}"``: the task's input ``path``).
"""

from __future__ import annotations

import json
import os
import shutil
import string
from pathlib import Path

import anyio

from engine.errors import ConfigError
from engine.interfaces import Agent, AgentJob, AgentJobStatus
from plugins.agents._jobdir import default_directory, job_id_for, job_path, write_atomic

__all__ = ["FileSensor"]


class FileSensor(Agent):
    """Waits for files to appear (see the module docstring for the settings).

    Args:
        directory: where job directories live; default ``$SLIPSTREAM_STATE_DIR/agents/file_sensor``
            or ``~/.slipstream/agents/file_sensor``.
        poll_interval: seconds between two looks at a path.
    """

    name = "file_sensor"

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, poll_interval: float = 1.0) -> None:
        self.directory = Path(directory) if directory is not None else default_directory("file_sensor")
        self.poll_interval = poll_interval

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def create(self, job: AgentJob) -> str:
        """Record what the job waits for (once per attempt).

        Raises:
            ConfigError: unknown settings, or a path that names no input.
        """
        target = _target(job)
        job_id = job_id_for(job.key)
        await anyio.to_thread.run_sync(self._create, job_id, json.dumps({"task": job.task, "path": target}))
        return job_id

    async def get(self, job_id: str) -> AgentJobStatus:
        return await anyio.to_thread.run_sync(self._look, job_id)

    async def delete(self, job_id: str) -> None:
        path = job_path(self.directory, job_id)
        if path is not None:
            await anyio.to_thread.run_sync(shutil.rmtree, path, True)

    def _create(self, job_id: str, spec: str) -> None:
        path = self.directory / job_id
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            return  # created before (a restart between create and the recorded handle)
        write_atomic(path / "job.json", spec)

    def _look(self, job_id: str) -> AgentJobStatus:
        path = job_path(self.directory, job_id)
        try:
            spec = json.loads((path / "job.json").read_text()) if path is not None else None
        except (OSError, ValueError):
            spec = None
        if spec is None:
            return AgentJobStatus(phase="lost", message=f"no file-sensor job {job_id!r}")
        target = str(spec["path"])
        if os.path.exists(target):
            return AgentJobStatus(phase="succeeded", value=target)
        return AgentJobStatus(phase="running")


def _target(job: AgentJob) -> str:
    what = f"task {job.task!r} (agent 'file_sensor')"
    unknown = sorted(set(job.config) - {"path"})
    if unknown:
        raise ConfigError(f"{what}: unknown settings {unknown}; the file sensor takes ['path']")
    template = job.config.get("path", "{path}")
    if not isinstance(template, str) or not template:
        raise ConfigError(f"{what}: path must be a path, with inputs as {{name}}, got {template!r}")
    names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    missing = sorted(name for name in names if name not in job.inputs)
    if missing:
        raise ConfigError(
            f"{what}: the path names {missing}, which are not inputs of the task {sorted(job.inputs)}; "
            "give the task that input or set path='...'"
        )
    return template.format_map({name: str(job.inputs[name]) for name in names})
