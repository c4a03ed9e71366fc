"""LocalExecutor against real tasks (tests/plugins/_tasks.py), in thread and process mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import plugins
from engine._literals import from_literal, to_literal
from engine.interfaces import Executor, TaskKey, TaskRequest, TaskStatus
from engine.models import TaskRef, WorkflowSpec
from plugins.local import LocalExecutor
from tests.plugins import _tasks

WAIT = 60  # seconds; a guard against hangs, never a wait for time to pass


class Harness:
    """An executor plus the on_done notifications it sent."""

    def __init__(self, executor: LocalExecutor) -> None:
        self.executor = executor
        self.done: list[TaskKey] = []  # notifications of attempts in a final phase
        self.started: list[TaskKey] = []  # notifications of attempts a worker picked up
        self._changed = asyncio.Event()

    def on_done(self, key: TaskKey) -> None:
        if self.executor.poll(key).phase in ("succeeded", "failed"):
            self.done.append(key)
        else:
            self.started.append(key)
        self._changed.set()

    async def wait_done(self, key: TaskKey) -> TaskStatus:
        async def until_done() -> None:
            while key not in self.done:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until_done(), WAIT)
        return self.executor.poll(key)

    async def wait_started(self, key: TaskKey) -> None:
        async def until_started() -> None:
            while key not in self.started:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until_started(), WAIT)

    async def run(self, request: TaskRequest) -> TaskStatus:
        await self.executor.submit(request)
        return await self.wait_done(request.key)


def request(task: Any, node: str = "n", attempt: int = 1, kind: str = "task", **inputs: Any) -> TaskRequest:
    literals = {name: to_literal(value, task.interface.inputs[name].type) for name, value in inputs.items()}
    return TaskRequest(
        key=TaskKey("exec-1", node, attempt),
        task=task.ref,
        inputs=literals,
        kind=kind,  # type: ignore[arg-type]
    )


def output(status: TaskStatus, task: Any, name: str = "o0") -> Any:
    assert status.phase == "succeeded", status
    types = dict(task.interface.outputs)
    return from_literal(status.outputs[name], types[name])


async def start(mode: str) -> Harness:
    harness = Harness(LocalExecutor(mode=mode, max_workers=2))  # type: ignore[arg-type]
    await harness.executor.start(harness.on_done)
    return harness


@pytest.fixture
async def local() -> AsyncIterator[Harness]:
    harness = await start("thread")
    yield harness
    await harness.executor.close()


@pytest.fixture
async def proc() -> AsyncIterator[Harness]:
    harness = await start("process")
    yield harness
    await harness.executor.close()


def test_exports() -> None:
    assert plugins.__all__ == ["LocalExecutor"]
    assert issubclass(LocalExecutor, Executor)
    assert LocalExecutor.name == "local"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode must be 'thread' or 'process'"):
        LocalExecutor(mode="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one worker"):
        LocalExecutor(max_workers=0)


async def test_submit_before_start() -> None:
    with pytest.raises(RuntimeError, match=r"await executor.start\(on_done\) first"):
        await LocalExecutor().submit(request(_tasks.add, a=1, b=2))


# --- thread mode -------------------------------------------------------------------------------


async def test_sync_task_succeeds(local: Harness) -> None:
    status = await local.run(request(_tasks.add, a=2, b=3))
    assert output(status, _tasks.add) == 5
    assert "slipstream-local" in status.worker
    assert status.started_at is not None
    assert local.done == [TaskKey("exec-1", "n", 1)]


async def test_user_exception_fails_with_traceback(local: Harness) -> None:
    status = await local.run(request(_tasks.boom, x=7))
    assert status.phase == "failed" and status.error is not None
    assert status.error.kind == "user"
    assert status.error.retryable is True
    assert status.error.message == "ValueError: bad x 7"
    assert status.error.node_id == "n"
    assert 'raise ValueError(f"bad x {x}")' in status.error.traceback
    assert "_tasks.py" in status.error.traceback
    assert "plugins/local.py" not in status.error.traceback, "our own call frame is trimmed"


async def test_output_type_mismatch_is_not_retryable(local: Harness) -> None:
    status = await local.run(request(_tasks.wrong_output, x=1))
    assert status.phase == "failed" and status.error is not None
    assert (status.error.kind, status.error.retryable) == ("user", False)
    assert "outputs of task" in status.error.message and "do not encode" in status.error.message


async def test_input_that_does_not_decode_is_not_retryable(local: Harness) -> None:
    req = request(_tasks.add, a=1, b=2)
    req = msgspec.structs.replace(req, inputs={"a": to_literal("x", str), "b": req.inputs["b"]})
    status = await local.run(req)
    assert status.phase == "failed" and status.error is not None
    assert (status.error.kind, status.error.retryable) == ("user", False)
    assert "do not decode" in status.error.message


async def test_unloadable_task_is_not_retryable(local: Harness) -> None:
    ref = TaskRef(name="ghost", module="tests.plugins.no_such_module", qualname="ghost", source_hash="x")
    req = TaskRequest(key=TaskKey("exec-1", "ghost", 1), task=ref, inputs={})
    status = await local.run(req)
    assert status.phase == "failed" and status.error is not None
    assert (status.error.kind, status.error.retryable) == ("user", False)
    assert "could not be loaded" in status.error.message and "ghost" in status.error.message


async def test_submit_is_idempotent(local: Harness) -> None:
    req = request(_tasks.count_calls, name="idem")
    await local.executor.submit(req)
    await local.executor.submit(req)  # in flight
    status = await local.wait_done(req.key)
    await local.executor.submit(req)  # finished
    await asyncio.sleep(0)
    assert output(status, _tasks.count_calls) == 1
    assert _tasks.CALLS["idem"] == 1
    assert local.done == [req.key]


async def test_poll_unknown_key_is_lost(local: Harness) -> None:
    assert local.executor.poll(TaskKey("nope", "n", 1)) == TaskStatus(phase="lost")


async def test_forget_drops_finished_result(local: Harness) -> None:
    req = request(_tasks.add, a=1, b=1)
    await local.run(req)
    local.executor.forget(req.key)
    assert local.executor.poll(req.key).phase == "lost"
    local.executor.forget(req.key)  # unknown: ignored


async def test_context_inside_task(local: Harness) -> None:
    req = request(_tasks.context_ids, node="ctx", attempt=3)
    req = msgspec.structs.replace(req, project="proj", domain="staging", secrets=("SLIP_TEST_SECRET", "SLIP_MISSING"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIP_TEST_SECRET", "s3cret")
        mp.delenv("SLIP_MISSING", raising=False)
        status = await local.run(req)
    assert output(status, _tasks.context_ids) == ["exec-1", "ctx", "3", "proj", "staging", "SLIP_TEST_SECRET"]


async def test_thread_cancel_ignores_result(local: Harness) -> None:
    _tasks.STARTED.clear()
    _tasks.RELEASE.clear()
    req = request(_tasks.blocking, x=1)
    await local.executor.submit(req)
    assert await asyncio.to_thread(_tasks.STARTED.wait, WAIT)
    assert local.executor.poll(req.key).phase == "running"
    assert "slipstream-local" in local.executor.poll(req.key).worker
    await local.executor.cancel(req.key)
    assert local.executor.poll(req.key).phase == "lost"
    _tasks.RELEASE.set()  # the thread finishes; its result must be dropped
    follow = await local.run(request(_tasks.add, node="after", a=1, b=1))
    assert output(follow, _tasks.add) == 2
    assert local.done == [TaskKey("exec-1", "after", 1)]
    await local.executor.cancel(TaskKey("nope", "n", 1))  # unknown: ignored


# --- async tasks -------------------------------------------------------------------------------


async def test_async_task_runs_on_loop(local: Harness) -> None:
    status = await local.run(request(_tasks.async_double, x=21))
    assert output(status, _tasks.async_double) == 42
    assert status.worker.endswith("/asyncio")


async def test_async_task_context_and_failure(local: Harness) -> None:
    status = await local.run(request(_tasks.async_context, node="actx", attempt=2))
    assert output(status, _tasks.async_context) == "exec-1/actx/2"
    failed = await local.run(request(_tasks.async_boom, node="aboom", x=1))
    assert failed.error is not None and failed.error.message == "RuntimeError: async bad 1"
    assert 'raise RuntimeError(f"async bad {x}")' in failed.error.traceback


async def test_async_task_cancel_really_cancels(local: Harness) -> None:
    _tasks.ASYNC_EVENTS.clear()
    req = request(_tasks.async_forever, x=1)
    await local.executor.submit(req)
    for _ in range(20):  # let the asyncio task start
        await asyncio.sleep(0)
    assert _tasks.ASYNC_EVENTS == ["started"]
    await local.executor.cancel(req.key)
    assert _tasks.ASYNC_EVENTS == ["started", "cancelled"]
    assert local.executor.poll(req.key).phase == "lost"
    assert local.done == []


async def test_close_cancels_in_flight_async(local: Harness) -> None:
    _tasks.ASYNC_EVENTS.clear()
    await local.executor.submit(request(_tasks.async_forever, x=1))
    for _ in range(20):
        await asyncio.sleep(0)
    await local.executor.close()
    assert _tasks.ASYNC_EVENTS == ["started", "cancelled"]


# --- dynamic -----------------------------------------------------------------------------------


async def test_dynamic_request_returns_spec(local: Harness) -> None:
    status = await local.run(request(_tasks.fan_out, kind="dynamic", n=3))
    assert status.phase == "succeeded", status
    assert status.dynamic_spec is not None
    spec = msgspec.msgpack.decode(status.dynamic_spec, type=WorkflowSpec)
    assert len(spec.nodes) == 3


# --- process mode ------------------------------------------------------------------------------


async def test_process_mode_success_failure_context(proc: Harness) -> None:
    ok, bad, ctx = await asyncio.gather(
        proc.run(request(_tasks.add, node="a", a=40, b=2)),
        proc.run(request(_tasks.boom, node="b", x=1)),
        proc.run(request(_tasks.context_ids, node="c", attempt=5)),
    )
    assert output(ok, _tasks.add) == 42
    assert "SpawnProcess" in ok.worker
    assert bad.error is not None and bad.error.message == "ValueError: bad x 1"
    assert 'raise ValueError(f"bad x {x}")' in bad.error.traceback
    assert output(ctx, _tasks.context_ids)[:3] == ["exec-1", "c", "5"]


async def test_process_mode_dynamic(proc: Harness) -> None:
    status = await proc.run(request(_tasks.fan_out, kind="dynamic", n=2))
    spec = msgspec.msgpack.decode(status.dynamic_spec or b"", type=WorkflowSpec)
    assert len(spec.nodes) == 2


async def test_process_mode_dead_worker_is_system_error_and_pool_recovers(proc: Harness) -> None:
    status = await proc.run(request(_tasks.die, node="die", x=1))
    assert status.phase == "failed" and status.error is not None
    assert (status.error.kind, status.error.retryable) == ("system", True)
    assert "worker died" in status.error.message
    after = await proc.run(request(_tasks.add, node="after", a=1, b=2))
    assert output(after, _tasks.add) == 3


async def test_process_mode_runs_a_task_that_is_not_importable(proc: Harness) -> None:
    from engine._task import task

    offset = 100

    @task
    def local_add(x: int) -> int:  # defined in a function: the worker gets it cloudpickled
        return x + offset

    assert local_add.ref.pickled is not None
    status = await proc.run(request(local_add, node="local", x=1))
    assert output(status, local_add) == 101


async def test_thread_mode_reports_when_a_worker_starts_the_attempt() -> None:
    """So the loop records NodeRunning, and starts the timeout clock, at the real start."""
    local = Harness(LocalExecutor(mode="thread", max_workers=1))
    await local.executor.start(local.on_done)
    _tasks.STARTED.clear()
    _tasks.RELEASE.clear()
    try:
        held = request(_tasks.blocking, node="held", x=1)
        await local.executor.submit(held)
        await local.wait_started(held.key)
        assert local.executor.poll(held.key).phase == "running"
        assert local.done == []
        _tasks.RELEASE.set()
        assert (await local.wait_done(held.key)).phase == "succeeded"
    finally:
        _tasks.RELEASE.set()
        await local.executor.close()
