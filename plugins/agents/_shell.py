"""`ShellAgent` (``shell``): a task attempt as a detached shell command.

A job is a directory ``<directory>/<job id>`` holding the job's settings, the command's ``stdout``
and ``stderr``, the ``pid`` of its process group, and, once the command ended, its ``exit`` code.
The command runs under a small ``sh`` wrapper in a session of its own, so it survives the engine,
and the wrapper writes the exit code itself: any process that can read the directory can tell how
the job ended, without being its parent. ``delete`` stops the whole process group (SIGTERM, then
SIGKILL after ``kill_grace``) and removes the directory.

Settings (``@agent("shell", ...)``):

- ``command`` (required): a shell command line; ``{name}`` is replaced by the task input ``name``,
  shell-quoted (``"wc -l < {path}"``).
- ``env``: extra environment variables (the task's secrets are set too, under their names).
- ``cwd``: the directory the command runs in.
- ``fatal_exit_codes``: exit codes that no retry can mend (default ``[126, 127]``: not executable,
  not found); any other non-zero code is a retryable failure, retried up to the task's ``retries``.

The job's value is its standard output without the trailing newline (for a task ``-> str``; a
task without outputs ignores it). POSIX only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import string
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio

from engine.errors import ConfigError
from engine.interfaces import Agent, AgentJob, AgentJobStatus
from plugins.agents._jobdir import default_directory, job_id_for, job_path, write_atomic

__all__ = ["ShellAgent"]

_SETTINGS = frozenset({"command", "env", "cwd", "fatal_exit_codes"})
# $1: the command, $2: the job directory. The command runs in a subshell (a fork, no exec: cheaper
# than a second sh) without the wrapper's arguments. The exit file may be seen empty while it is
# written; a reader then finds the wrapper alive and looks again.
_WRAPPER = '( cmd=$1; set --; eval "$cmd" ) > "$2/stdout" 2> "$2/stderr" < /dev/null; printf %s "$?" > "$2/exit"'
# A job directory without a pid this long after it was made is a create that died midway.
_START_GRACE_SECONDS = 60.0
_MESSAGE_TAIL = 2000
_PROC = Path("/proc")


class ShellAgent(Agent):
    """Runs shell commands as detached jobs (see the module docstring for the settings).

    Args:
        directory: where job directories live; default ``$SLIPSTREAM_STATE_DIR/agents/shell`` or
            ``~/.slipstream/agents/shell``. Engines that should resume each other's jobs share it.
        kill_grace: seconds between SIGTERM and SIGKILL when a job is deleted.
        poll_interval: seconds between two looks at a running job.
    """

    name = "shell"

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, kill_grace: float = 5.0, poll_interval: float = 0.5
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_directory("shell")
        self.kill_grace = kill_grace
        self.poll_interval = poll_interval
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # reaped when seen done
        self._pids: dict[str, tuple[int, str]] = {}  # job id -> (pid, start time), as read from its file

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def create(self, job: AgentJob) -> str:
        """Start the job's command, or find the one started for this attempt before.

        Raises:
            ConfigError: missing or unknown settings, or a placeholder that names no input.
        """
        command, env, cwd = _settings(job)
        job_id = job_id_for(job.key)
        fatal = sorted(int(code) for code in job.config.get("fatal_exit_codes", (126, 127)))
        spec = json.dumps({"task": job.task, "command": command, "fatal_exit_codes": fatal})
        # file system work and the fork off the event loop: the loop runs every other execution
        await anyio.to_thread.run_sync(self._create, job_id, spec, command, env, cwd)
        return job_id

    async def get(self, job_id: str) -> AgentJobStatus:
        return await anyio.to_thread.run_sync(self._look, job_id)

    async def delete(self, job_id: str) -> None:
        path = job_path(self.directory, job_id)
        if path is None or not path.is_dir():
            return
        pid = _read_pid(path)
        if pid is not None and _alive(*pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid[0], signal.SIGTERM)
            deadline = time.monotonic() + self.kill_grace
            while _alive(*pid) and time.monotonic() < deadline:
                self._reap(job_id)
                await anyio.sleep(0.02)
            if _alive(*pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid[0], signal.SIGKILL)
        self._reap(job_id)
        self._pids.pop(job_id, None)
        await anyio.to_thread.run_sync(shutil.rmtree, path, True)

    def _create(self, job_id: str, spec: str, command: str, env: dict[str, str], cwd: str | None) -> None:
        if cwd is not None and not os.path.isdir(cwd):
            raise ConfigError(f"the shell agent's cwd={cwd!r} is not a directory here; create it or fix cwd=")
        path = self.directory / job_id
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            return  # created before (a restart between create and the recorded handle)
        try:
            write_atomic(path / "job.json", spec)
            child = self._spawn(command, path, env, cwd)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # no half-made job for the next create to find
            raise
        self._children[job_id] = child
        write_atomic(path / "pid", f"{child.pid} {_started_at(child.pid) or ''}")

    def _look(self, job_id: str) -> AgentJobStatus:
        path = job_path(self.directory, job_id)
        if path is None:
            return AgentJobStatus(phase="lost", message=f"no shell job {job_id!r}")
        self._reap(job_id)
        ended = _read_exit(path)
        if ended is not None:
            return _outcome(path, job_id, ended)
        pid = self._pids.get(job_id) or _read_pid(path)
        if pid is None:
            if not path.is_dir():
                return AgentJobStatus(phase="lost", message=f"no shell job {job_id!r}")
            if time.time() - path.stat().st_mtime < _START_GRACE_SECONDS:
                return AgentJobStatus(phase="running")
            return AgentJobStatus(phase="lost", message=f"shell job {job_id!r} never started its command")
        self._pids[job_id] = pid  # a job's pid never changes: read its file once
        if _alive(*pid):
            return AgentJobStatus(phase="running")
        ended = _read_exit(path)  # it may have ended between the two looks
        if ended is not None:
            return _outcome(path, job_id, ended)
        self._pids.pop(job_id, None)
        if not path.is_dir():
            return AgentJobStatus(phase="lost", message=f"no shell job {job_id!r}")
        return AgentJobStatus(phase="lost", message=f"the process of shell job {job_id!r} vanished (killed outside?)")

    def _spawn(self, command: str, path: Path, env: dict[str, str], cwd: str | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["sh", "-c", _WRAPPER, "slipstream-shell-job", command, str(path.resolve())],
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: delete stops it all, and it outlives us
        )

    def _reap(self, job_id: str) -> None:
        child = self._children.get(job_id)
        if child is not None and child.poll() is not None:
            del self._children[job_id]


def _settings(job: AgentJob) -> tuple[str, dict[str, str], str | None]:
    what = f"task {job.task!r} (agent 'shell')"
    unknown = sorted(set(job.config) - _SETTINGS)
    if unknown:
        raise ConfigError(f"{what}: unknown settings {unknown}; the shell agent takes {sorted(_SETTINGS)}")
    template = job.config.get("command")
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"{what} needs command='...', a shell command line (inputs as {{name}})")
    names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    missing = sorted(name for name in names if name not in job.inputs)
    if missing:
        raise ConfigError(f"{what}: the command names {missing}, which are not inputs of the task {sorted(job.inputs)}")
    command = template.format_map({name: shlex.quote(str(job.inputs[name])) for name in names})
    env = job.config.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{what}: env must map names to strings, got {env!r}")
    codes = job.config.get("fatal_exit_codes", ())
    if isinstance(codes, (str, bytes)) or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
        raise ConfigError(f"{what}: fatal_exit_codes must be a list of ints, got {codes!r}")
    cwd = job.config.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError(f"{what}: cwd must be a directory path, got {cwd!r}")
    return command, {**env, **job.secrets}, cwd


def _outcome(path: Path, job_id: str, code: int) -> AgentJobStatus:
    if code == 0:
        return AgentJobStatus(phase="succeeded", value=_read_text(path / "stdout").removesuffix("\n"))
    spec: dict[str, Any] = json.loads(_read_text(path / "job.json") or "{}")
    stderr = _read_text(path / "stderr")[-_MESSAGE_TAIL:].strip()
    message = f"shell job {job_id!r} exited with code {code}" + (f": {stderr}" if stderr else "")
    return AgentJobStatus(phase="failed", message=message, retryable=code not in spec.get("fatal_exit_codes", ()))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _read_exit(path: Path) -> int | None:
    text = _read_text(path / "exit").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _read_pid(path: Path) -> tuple[int, str] | None:
    parts = _read_text(path / "pid").split()
    if not parts or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1] if len(parts) > 1 else ""


def _started_at(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells it from a later
    process given the same pid."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str = "") -> bool:
    if not _PROC.is_dir():  # no /proc: ask the kernel (a zombie counts as alive there)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, not yet reaped by its parent
        return False
    return not started or fields[19] == started
