"""Agents through `Engine` on both event stores: the ``agents`` executor with the built-in shell agent
and file sensor. Success, failures (retryable or not), abort, timeout, a restart mid-job (the job is
created once and polled by the new engine), and the typed errors of bad declarations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from catalog import LocalBlobStore
from engine import ConfigError, Engine, ExecutionAborted, TaskFailed
from engine._postgres_store import PostgresEventStore
from engine._sqlite_store import SqliteEventStore
from engine.interfaces import AgentJob, AgentJobStatus, TaskKey, TaskStatus
from plugins.agents import AgentExecutor, FileSensor, ShellAgent, agent
from plugins.local import LocalExecutor

from . import _agent_tasks as wf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


EngineFactory = Callable[..., Engine]


class CountingShell(ShellAgent):
    """The shell agent, counting the calls the executor makes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.calls: list[str] = []

    async def create(self, job: AgentJob) -> str:
        self.calls.append("create")
        return await super().create(job)

    async def get(self, job_id: str) -> AgentJobStatus:
        self.calls.append("get")
        return await super().get(job_id)


@pytest.fixture
def make_engine(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> EngineFactory:
    """Engines sharing one store and one agents directory, each with fresh executors and agents
    (as a restarted process would have)."""
    if store_kind == "postgres":
        dsn = request.getfixturevalue("postgres_database")
        schema = request.getfixturevalue("postgres_schema")

    def factory(shell: type[ShellAgent] = ShellAgent) -> Engine:
        if store_kind == "sqlite":
            store = SqliteEventStore(tmp_path / "events.db")
        else:
            store = PostgresEventStore(dsn, schema=schema)
        agents = AgentExecutor(
            [shell(tmp_path / "agents" / "shell", kill_grace=2.0), FileSensor(tmp_path / "agents" / "sensor")],
            poll_interval=0.05,
        )
        executors = {"local": LocalExecutor(), "agents": agents}
        return Engine(store, executors, retry_delay=0.05, blobs=LocalBlobStore(tmp_path / "blobs"))  # type: ignore[arg-type]

    return factory


def jobs(tmp_path: Path) -> list[str]:
    directory = tmp_path / "agents" / "shell"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        # polled: the writers are job processes, which cannot set an anyio.Event
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_a_shell_job_gets_its_inputs_and_gives_the_output(make_engine: EngineFactory) -> None:
    async with make_engine() as eng:
        handle = await eng.launch(wf.shout_greeting, name="ada; rm -rf /")  # quoted, not run
        assert await handle.outputs(timeout=30) == "HELLO ADA; RM -RF /"
        history = await eng.history(handle.execution_id)
    running = [e for e in history if type(e).__name__ == "NodeRunning" and e.node_id == "shout"]
    assert len(running) == 1 and running[0].executor == "agents"
    assert '"shell"' in running[0].handle and "shout" in running[0].handle  # the job id, durable


async def test_a_retryable_failure_is_retried_then_fails(make_engine: EngineFactory, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    async with make_engine() as eng:
        handle = await eng.launch(wf.retryable_failure, log=str(log))
        with pytest.raises(TaskFailed) as failure:
            await handle.outputs(timeout=30)
        history = await eng.history(handle.execution_id)
    assert failure.value.node_id == "fails_retryably" and failure.value.error_kind == "user"
    assert "exited with code 3: disk full" in str(failure.value)
    assert len(lines(log)) == 3  # retries=2: three jobs
    assert kinds(history).count("NodeQueued") == 3


async def test_a_fatal_exit_code_is_not_retried(make_engine: EngineFactory, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    async with make_engine() as eng:
        handle = await eng.launch(wf.fatal_failure, log=str(log))
        with pytest.raises(TaskFailed, match="exited with code 5"):
            await handle.outputs(timeout=30)
        assert kinds(await eng.history(handle.execution_id)).count("NodeQueued") == 1
    assert len(lines(log)) == 1


async def test_a_command_not_found_is_not_retried(make_engine: EngineFactory) -> None:
    async with make_engine() as eng:
        handle = await eng.launch(wf.command_not_found)
        with pytest.raises(TaskFailed, match="exited with code 127"):
            await handle.outputs(timeout=30)
        assert kinds(await eng.history(handle.execution_id)).count("NodeQueued") == 1


async def test_abort_deletes_the_job(make_engine: EngineFactory, tmp_path: Path) -> None:
    log, gate = tmp_path / "pids.log", tmp_path / "never"
    async with make_engine() as eng:
        handle = await eng.launch(wf.gated, log=str(log), gate=str(gate))
        await wait_until(lambda: len(lines(log)) == 1)
        pid = int(lines(log)[0])
        assert len(jobs(tmp_path)) == 1
        await eng.abort(handle.execution_id, reason="no longer needed")
        with pytest.raises(ExecutionAborted, match="no longer needed"):
            await handle.outputs(timeout=15)
        await wait_until(lambda: not alive(pid) and not jobs(tmp_path))


async def test_a_timeout_deletes_the_job_and_counts_as_retryable(make_engine: EngineFactory, tmp_path: Path) -> None:
    log = tmp_path / "pids.log"
    async with make_engine() as eng:
        handle = await eng.launch(wf.timing_out, log=str(log))
        with pytest.raises(TaskFailed) as failure:
            await handle.outputs(timeout=30)
        history = await eng.history(handle.execution_id)
    assert failure.value.error_kind == "timeout"
    timeouts = [e.attempt for e in history if type(e).__name__ == "NodeFailed" and e.error.kind == "timeout"]
    assert timeouts == [1, 2]
    pids = [int(pid) for pid in lines(log)]
    assert len(pids) == 2
    await wait_until(lambda: not any(alive(pid) for pid in pids) and not jobs(tmp_path))


async def test_a_restarted_engine_resumes_polling_the_job_it_left_running(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    log, gate = tmp_path / "pids.log", tmp_path / "gate"
    async with make_engine() as first:
        handle = await first.launch(wf.gated, log=str(log), gate=str(gate))
        execution_id = handle.execution_id
        await wait_until(lambda: len(lines(log)) == 1)

        async def started_recorded() -> bool:
            return "NodeRunning" in kinds(await first.history(execution_id))

        with anyio.fail_after(15):
            while not await started_recorded():  # noqa: ASYNC110 - polling the store, no event to await
                await anyio.sleep(0.02)
    # the first engine is gone; its job runs on
    pid = int(lines(log)[0])
    assert alive(pid)
    gate.touch()
    async with make_engine(shell=CountingShell) as second:
        assert await second.handle(execution_id).outputs(timeout=30) == "done"
        history = await second.history(execution_id)
        shell = second.executors["agents"]._agents["shell"]  # type: ignore[attr-defined]
    assert isinstance(shell, CountingShell) and "get" in shell.calls and "create" not in shell.calls  # polled only
    assert len(lines(log)) == 1  # created exactly once
    assert kinds(history).count("NodeQueued") == 1 and kinds(history).count("NodeRunning") == 1


async def test_a_file_sensor_waits_for_its_file(make_engine: EngineFactory, tmp_path: Path) -> None:
    target = tmp_path / "arrived.csv"
    async with make_engine() as eng:
        handle = await eng.launch(wf.sensed, path=str(target))
        await anyio.sleep(0.3)
        assert (await eng.get(handle.execution_id)).status == "running"
        target.write_text("a,b\n")
        assert await handle.outputs(timeout=30) == str(target)


async def test_secrets_reach_the_job_environment(make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPSTREAM_AGENT_TOKEN", "s3cr3t")
    async with make_engine() as eng:
        handle = await eng.launch(wf.token)
        assert await handle.outputs(timeout=30) == "s3cr3t"


async def test_an_agent_that_is_not_installed_is_a_typed_error(make_engine: EngineFactory) -> None:
    async with make_engine() as eng:
        handle = await eng.launch(wf.missing_agent)
        with pytest.raises(TaskFailed) as failure:
            await handle.outputs(timeout=30)
        assert kinds(await eng.history(handle.execution_id)).count("NodeQueued") == 1  # not retried
    message = str(failure.value)
    assert "ConfigError" in message and "agent 'no_such_agent', which is not installed" in message
    assert "'slipstream.agents'" in message and "file_sensor" in message and "shell" in message


async def test_unknown_agent_settings_are_a_typed_error(make_engine: EngineFactory) -> None:
    async with make_engine() as eng:
        handle = await eng.launch(wf.bad_settings)
        with pytest.raises(TaskFailed, match=r"unknown settings \['colour'\]; the shell agent takes"):
            await handle.outputs(timeout=30)


async def test_a_missing_working_directory_is_a_typed_error_and_leaves_no_job(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    async with make_engine() as eng:
        handle = await eng.launch(wf.missing_directory)
        with pytest.raises(TaskFailed, match=r"cwd='/slipstream/no/such/directory' is not a directory here"):
            await handle.outputs(timeout=30)
        assert kinds(await eng.history(handle.execution_id)).count("NodeQueued") == 1  # not retried
    assert jobs(tmp_path) == []


# --- the shell agent alone ------------------------------------------------------------------------


async def test_create_is_idempotent_per_attempt(tmp_path: Path) -> None:
    shell = ShellAgent(tmp_path / "jobs")
    await shell.start()
    log = tmp_path / "runs.log"
    job = AgentJob(key=TaskKey("e1", "n/0", 1), task="t", config={"command": "echo run >> {log}"}, inputs={"log": log})
    first = await shell.create(job)
    again = await ShellAgent(tmp_path / "jobs").create(job)  # another instance, as after a crash
    assert again == first
    with anyio.fail_after(10):
        while (await shell.get(first)).phase == "running":  # noqa: ASYNC110 - polling is what agents do
            await anyio.sleep(0.02)
    assert (await shell.get(first)).phase == "succeeded"
    assert lines(log) == ["run"]
    await shell.delete(first)
    assert (await shell.get(first)).phase == "lost"
    assert (await shell.get("../../etc")).phase == "lost"  # ids never name paths outside
    await shell.delete("../../etc")


def test_an_agent_task_called_in_process_says_where_it_runs() -> None:
    @agent("shell", command="true")
    def body() -> None:
        """Runs on the shell agent."""

    with pytest.raises(ConfigError, match="runs on agent 'shell', not in this process"):
        body()
    with pytest.raises(ConfigError, match="needs the agent's name"):
        agent("")
    with pytest.raises(ConfigError, match="put it under @task"):
        agent("shell", command="true")(wf.shout)


def test_agents_are_found_by_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="slipstream.agents")}
    assert names["shell"] == "plugins.agents:ShellAgent" and names["file_sensor"] == "plugins.agents:FileSensor"
    executors = {ep.name: ep.value for ep in entry_points(group="slipstream.executors")}
    assert executors["agents"] == "plugins.agents:AgentExecutor"
    assert os.name == "posix"  # the shell agent is POSIX only


async def test_a_map_runs_one_job_per_element(make_engine: EngineFactory, tmp_path: Path) -> None:
    async with make_engine() as eng:
        handle = await eng.launch(wf.shout_all, texts=["a", "b", "c"])
        assert await handle.outputs(timeout=30) == ["A", "B", "C"]
        history = await eng.history(handle.execution_id)
    assert "ChunkFinished" in kinds(history)
    assert len(jobs(tmp_path)) == 3


async def test_a_restarted_engine_resumes_polling_a_chunk_of_jobs(make_engine: EngineFactory, tmp_path: Path) -> None:
    gates = [str(tmp_path / f"gate-{i}") for i in range(3)]
    pids = [Path(f"{gate}.pids") for gate in gates]
    async with make_engine() as first:
        handle = await first.launch(wf.gated_map, gates=gates)
        execution_id = handle.execution_id
        await wait_until(lambda: all(len(lines(p)) == 1 for p in pids))

        async def started_recorded() -> bool:
            return "NodeRunning" in kinds(await first.history(execution_id))

        with anyio.fail_after(15):
            while not await started_recorded():  # noqa: ASYNC110 - polling the store, no event to await
                await anyio.sleep(0.02)
    for gate in gates:
        await anyio.Path(gate).touch()
    async with make_engine(shell=CountingShell) as second:
        assert await second.handle(execution_id).outputs(timeout=30) == gates
        shell = second.executors["agents"]._agents["shell"]  # type: ignore[attr-defined]
    assert isinstance(shell, CountingShell) and "get" in shell.calls and "create" not in shell.calls
    assert all(len(lines(p)) == 1 for p in pids)  # every element's job created exactly once


async def test_the_executor_and_agents_are_built_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPSTREAM_STATE_DIR", str(tmp_path))  # where the shell agent keeps its jobs
    async with Engine.embedded(tmp_path, executors=["local", "agents"]) as eng:
        assert isinstance(eng.executors["agents"], AgentExecutor)
        handle = await eng.launch(wf.shout_greeting, name="grace")
        assert await handle.outputs(timeout=30) == "HELLO GRACE"
    assert len(jobs(tmp_path)) == 1


async def test_jobs_in_flight_hold_no_worker_thread(make_engine: EngineFactory, tmp_path: Path) -> None:
    paths = [tmp_path / "later" / f"{i}.csv" for i in range(200)]
    sensor_jobs = tmp_path / "agents" / "sensor"
    async with make_engine() as eng:
        before = threading.active_count()
        handle = await eng.launch(wf.sensed_all, paths=[str(p) for p in paths])
        await wait_until(lambda: sensor_jobs.is_dir() and len(list(sensor_jobs.iterdir())) == len(paths), timeout=30)
        await anyio.sleep(0.3)  # several polls of every job
        assert threading.active_count() < before + 50  # the loop polls them; anyio's small pool does the stats
        assert (await eng.get(handle.execution_id)).status == "running"
        await anyio.Path(tmp_path / "later").mkdir()
        for path in paths:
            await anyio.Path(path).touch()
        assert await handle.outputs(timeout=60) == [str(p) for p in paths]


def test_a_job_found_running_again_and_again_is_asked_less_often() -> None:
    from plugins.agents._executor import _Job

    executor = AgentExecutor([ShellAgent("/nonexistent")], poll_interval=0.1, backoff=4)
    job = _Job(TaskKey("e", "n", 1), ShellAgent("/nonexistent"), "j", None, "", TaskStatus(phase="running"))
    intervals = []
    for quiet in range(6):
        job.quiet_polls = quiet
        intervals.append(round(executor._interval(job), 3))
    assert intervals == [0.1, 0.15, 0.225, 0.338, 0.4, 0.4]  # grows by half, up to 4x
    with pytest.raises(ConfigError, match="backoff must be a multiple >= 1"):
        AgentExecutor(backoff=0.5)
    with pytest.raises(ConfigError, match="poll_interval must be positive"):
        AgentExecutor(poll_interval=0)


def start_server(state: Path, *executors: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    env["SLIPSTREAM_STATE_DIR"] = str(state)  # where the server's shell agent keeps its jobs
    chosen = [arg for name in executors for arg in ("--executor", name)]
    serve = ["serve", "--state-dir", str(state), *chosen, "--path", str(ROOT)]
    return subprocess.Popen(
        [sys.executable, "-c", "from engine._cli import main; main()", *serve],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_slipstream_serve_runs_agent_tasks_with_several_executors(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = start_server(state, "local", "agents")
    try:
        async with Engine.embedded(state, executors=["local", "agents"], run_loop=False) as client:
            handle = await client.launch(wf.shout_greeting, name="serve")
            assert await handle.outputs(timeout=60) == "HELLO SERVE"
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "Traceback" not in stderr
    assert len(list((state / "agents" / "shell").iterdir())) == 1  # the server's agent ran the job


def test_the_agents_facade_exports_its_public_names() -> None:
    import plugins.agents as facade

    public = {name for name in vars(facade) if not name.startswith("_") and name != "annotations"}
    assert sorted(facade.__all__) == sorted(public)
