"""`slipstream serve` runs what client engines (run_loop=False) launch, on both stores, and stops
gracefully on SIGTERM or SIGINT, started the way a service manager starts it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from engine import Engine
from engine.events import NodeFailed, NodeRunning
from plugins.local import LocalExecutor

from . import _workflows as wf
from .conftest import runs, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store_args(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[str]:
    if store_kind == "sqlite":
        return ["--state-dir", str(tmp_path / "state")]
    return ["--postgres", request.getfixturevalue("postgres_database")]


def client(store_args: list[str]) -> Engine:
    flag, value = store_args
    options = {"run_loop": False}
    if flag == "--postgres":
        return Engine.connect(postgres=value, **options)
    return Engine.embedded(value, **options)


def start_server(store_args: list[str], *options: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    return subprocess.Popen(
        [
            *(sys.executable, "-c", "from engine._cli import main; main()", "serve", *store_args),
            *("--path", str(ROOT), *options),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_serve_runs_what_a_client_launches(store_args: list[str]) -> None:
    server = start_server(store_args)
    try:
        async with client(store_args) as eng:
            assert eng.executors  # configured, but this engine runs no loop
            first = await eng.launch(wf.diamond, x=3)
            second = await eng.launch(wf.foreach_join, n=4)
            assert await first.outputs(timeout=60) == 16
            assert await second.outputs(timeout=60) == sum(i * i for i in range(4))
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "serving executions" in stderr
    assert "Traceback" not in stderr
    for execution_id in (first.execution_id, second.execution_id):
        assert f"execution started execution={execution_id}" in stderr
        assert f"execution succeeded execution={execution_id}" in stderr


async def test_serve_without_execution_lines_runs_and_prints_none(store_args: list[str]) -> None:
    """--no-execution-lines: a server at thousands of executions a second keeps its CPU for them
    (the lines cost about 15 % of its throughput); it still says what else it does."""
    server = start_server(store_args, "--no-execution-lines")
    try:
        async with client(store_args) as eng:
            handle = await eng.launch(wf.diamond, x=3)
            assert await handle.outputs(timeout=60) == 16
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "serving executions" in stderr
    assert handle.execution_id not in stderr and "execution started" not in stderr


async def test_serve_with_a_project_runs_only_that_projects_executions(store_args: list[str]) -> None:
    """Servers may share a store by project: ``serve --project`` leaves the others' executions."""
    server = start_server(store_args, "--project", "scoped-a")
    try:
        async with client(store_args) as eng:
            theirs = await eng.launch(wf.diamond, project="scoped-b", x=1)
            ours = await eng.launch(wf.diamond, project="scoped-a", x=3)
            assert await ours.outputs(timeout=60) == 16
            await anyio.sleep(1.0)  # past the claim delay: it would have taken theirs by now
            assert (await eng.get(theirs.execution_id)).status == "created"
            await eng.abort(theirs.execution_id)  # nothing left unfinished for the next test's server
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "in project scoped-a with" in stderr, stderr
    assert f"execution succeeded execution={ours.execution_id}" in stderr
    assert theirs.execution_id not in stderr


async def test_a_client_engine_runs_nothing_itself(tmp_path: Path) -> None:
    async with Engine.embedded(tmp_path, run_loop=False) as eng:
        handle = await eng.launch(wf.diamond, x=1)
        assert (await eng.get(handle.execution_id)).status == "created"
    async with Engine(eng.store, {"local": LocalExecutor()}) as runner:  # a serving engine picks it up
        assert await runner.handle(handle.execution_id).outputs(timeout=30) == 8


def _pid(worker: str) -> str:
    """The process id in a local executor's worker name, ``MainProcess[123]/slipstream-local-1``."""
    found = re.search(r"\[(\d+)\]", worker)
    assert found is not None, worker
    return found.group(1)


# -- graceful stop -----------------------------------------------------------------------------------


def _as_a_service_manager_would() -> None:
    """In the child before exec: its own session, and SIGINT and SIGTERM ignored, as a shell's
    background job or a careless supervisor passes them on; serve must install its own handlers."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Server:
    """A background ``slipstream serve`` whose stderr is collected line by line."""

    def __init__(self, store_args: list[str], *extra: str, env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
        environment.update(env or {})
        argv = [sys.executable, "-c", "from engine._cli import main; main()", "serve", *store_args]
        self.process = subprocess.Popen(
            [*argv, "--path", str(ROOT), *extra],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_as_a_service_manager_would,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, text: str, timeout: float = 30.0) -> None:
        with anyio.fail_after(timeout):
            # polled: the lines come from a reader thread
            while not any(text in line for line in self.lines):
                assert self.process.poll() is None, f"serve exited early:\n{self.stderr}"
                await anyio.sleep(0.05)

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> tuple[int, float]:
        """Send ``signum``; return the exit status and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signum)
        code = await anyio.to_thread.run_sync(lambda: self.process.wait(timeout))
        self._reader.join(5)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_ends_serve_with_exit_0(store_args: list[str], signum: int) -> None:
    server = Server(store_args)
    try:
        await server.wait_for("serving executions")
        code, took = await server.stop(signum)
    finally:
        server.kill()
    assert code == 0, server.stderr
    assert took < 10, f"serve took {took:.1f}s to stop"
    assert f"{signal.Signals(signum).name}: stopping" in server.stderr
    assert server.lines[-1] == "stopped"
    assert "Traceback" not in server.stderr


async def test_serve_lets_running_attempts_finish_then_a_second_signal_exits_at_once(
    store_args: list[str], side_effects: Path
) -> None:
    server = Server(store_args, env={"SLIPSTREAM_TEST_SIDE_EFFECTS": str(side_effects)})
    try:
        await server.wait_for("serving executions")
        async with client(store_args) as eng:
            handle = await eng.launch(wf.abortable, x=1)  # an attempt that never ends by itself
            await wait_until(lambda: runs(side_effects, "wait_forever_started", handle.execution_id) == 1, 30)
            server.process.send_signal(signal.SIGTERM)
            await server.wait_for("SIGTERM: stopping")
            await anyio.sleep(0.5)
            assert server.process.poll() is None  # waiting for the running attempt (--grace 30)
            code, took = await server.stop(signal.SIGTERM)
            assert code == 128 + signal.SIGTERM, server.stderr
            assert took < 5
            assert "SIGTERM again: exiting now" in server.stderr
            await eng.abort(handle.execution_id)
    finally:
        server.kill()


async def test_the_grace_period_bounds_the_stop(store_args: list[str], side_effects: Path) -> None:
    server = Server(store_args, "--grace", "1", env={"SLIPSTREAM_TEST_SIDE_EFFECTS": str(side_effects)})
    try:
        await server.wait_for("serving executions")
        async with client(store_args) as eng:
            handle = await eng.launch(wf.abortable, x=1)
            await wait_until(lambda: runs(side_effects, "wait_forever_started", handle.execution_id) == 1, 30)
            code, took = await server.stop(signal.SIGTERM)
            assert code == 0, server.stderr
            assert took < 10
            assert "grace period over" in server.stderr
            # the attempt was cancelled, and the execution handed back for another server to retry
            await wait_until(lambda: runs(side_effects, "wait_forever_cancelled", handle.execution_id) == 1, 10)
            assert (await eng.get(handle.execution_id)).status == "running"
            await eng.abort(handle.execution_id)
    finally:
        server.kill()


@pytest.mark.timeout(240)
async def test_two_servers_one_stopped_mid_run_nothing_runs_twice(postgres_database: str, side_effects: Path) -> None:
    """200 executions on two servers sharing Postgres; one is SIGTERMed while they run: it exits
    0 promptly, the other finishes everything, and no node ran twice."""
    store_args = ["--postgres", postgres_database]
    env = {"SLIPSTREAM_TEST_SIDE_EFFECTS": str(side_effects)}
    # the local executor: each server's own process runs its attempts (counted by pid below)
    options = ("--resync-interval", "1", "--workers", "8", "--executor", "local")
    first = Server(store_args, *options, env=env)
    second = Server(store_args, *options, env=env)
    try:
        await first.wait_for("serving executions")
        await second.wait_for("serving executions")
        async with client(store_args) as eng:
            handles = [await eng.launch(wf.crashable, n=3) for _ in range(200)]
            ids = {handle.execution_id for handle in handles}

            async def finished() -> int:
                done = await eng.list_executions(workflow="crashable", status="succeeded", limit=1000)
                return len(ids & {summary.execution_id for summary in done})

            with anyio.fail_after(60):
                # polled: the servers are other processes
                while await finished() < 30:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            assert await finished() < 200, "everything finished before the stop: the test proves nothing"
            code, took = await first.stop(signal.SIGTERM)
            assert code == 0, first.stderr
            assert took < 15, f"the stopped server took {took:.1f}s"
            assert "Traceback" not in first.stderr

            with anyio.move_on_after(90):
                while await finished() < 200:  # noqa: ASYNC110
                    await anyio.sleep(0.2)
            if await finished() < 200:
                stuck = [(await eng.get(i)).status for i in ids]
                tails = {i: [type(e).__name__ + ":" + e.node_id for e in (await eng.history(i))[-4:]] for i in ids}
                unfinished = {i: tails[i] for i, status in zip(ids, stuck, strict=True) if status != "succeeded"}
                pytest.fail(f"{len(unfinished)} executions did not finish: {unfinished}\n{second.stderr}")
            for handle in handles:
                assert await handle.outputs(timeout=10) == 3 + sum(x + 1 for x in (10, 20, 30, 40))

            workers: Counter[str] = Counter()
            for execution_id in ids:
                history = await eng.history(execution_id)
                assert not [e for e in history if isinstance(e, NodeFailed)], execution_id
                workers.update(_pid(e.worker) for e in history if isinstance(e, NodeRunning) and e.worker)
        assert workers[str(first.pid)] > 0 and workers[str(second.pid)] > 0, workers
        for name in ("step_0", "step_1", "step_2", "step_10", "step_20", "step_30", "step_40"):
            per_execution = Counter(line.split()[0] for line in (side_effects / f"{name}.log").read_text().splitlines())
            assert set(per_execution) == ids
            assert set(per_execution.values()) == {1}, f"{name} ran twice in some execution"
        code, _ = await second.stop(signal.SIGTERM)
        assert code == 0, second.stderr
    finally:
        first.kill()
        second.kill()
