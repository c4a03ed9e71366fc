"""engine.testing: the FakeExecutor's scripting, and what the in-memory store adds to the contract.

The in-memory store's `EventStore` behaviour is covered by tests/engine/test_store_contract.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from engine.events import ExecutionCreated, NodeQueued, decode_event
from engine.interfaces import EventStore, Executor, TaskKey, TaskRequest, TaskStatus
from engine.models import ErrorInfo, TaskRef, WorkflowSpec
from engine.testing import FakeAttempt, FakeExecutor, InMemoryEventStore, InMemoryLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REF = TaskRef(name="t", module="tests.fake", qualname="t", source_hash="h")
OTHER_REF = TaskRef(name="gpu_t", module="tests.fake", qualname="gpu_t", source_hash="h")


def key(node: str = "a", attempt: int = 1, execution: str = "ex-1") -> TaskKey:
    return TaskKey(execution, node, attempt)


def request(node: str = "a", attempt: int = 1, execution: str = "ex-1", task: TaskRef = REF) -> TaskRequest:
    return TaskRequest(key=key(node, attempt, execution), task=task, inputs={"x": b"\x01"})


class Clock:
    """A stepped clock: each call returns the next second after T0."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Loop:
    """Stands in for a controller: collects the executor's report call-backs."""

    def __init__(self) -> None:
        self.reports: list[TaskKey] = []

    def report(self, key: TaskKey) -> None:
        self.reports.append(key)


async def started(fake: FakeExecutor) -> Loop:
    loop = Loop()
    await fake.start(loop.report)
    return loop


# --- submit, poll, handles --------------------------------------------------------------------------


async def test_submit_before_start_is_an_error() -> None:
    fake = FakeExecutor()
    assert isinstance(fake, Executor)
    with pytest.raises(RuntimeError, match=r"submit before start\(\)"):
        await fake.submit(request())
    assert fake.submitted == []


async def test_submit_records_every_call_and_is_idempotent_per_key() -> None:
    fake = FakeExecutor()
    loop = await started(fake)
    first = await fake.submit(request("a"))
    second = await fake.submit(request("b"))
    again = await fake.submit(request("a"))
    assert (first, second, again) == ("fake:1", "fake:2", "fake:1")
    assert [r.key for r in fake.submitted] == [key("a"), key("b"), key("a")]
    assert fake.in_flight == [key("a"), key("b")]
    assert await fake.poll(key("a"), first) == TaskStatus(phase="queued", handle="fake:1")
    assert await fake.poll(key("b")) == TaskStatus(phase="queued", handle="fake:2")
    assert fake.polls == [(key("a"), "fake:1"), (key("b"), "")]
    assert loop.reports == []  # nothing started or finished yet


async def test_handles_from_keys() -> None:
    fake = FakeExecutor(handles="key")
    await started(fake)
    assert await fake.submit(request("a", 2)) == "fake:ex-1/a/2"
    with pytest.raises(ValueError, match="use 'counter' or 'key'"):
        FakeExecutor(handles="uuid")  # type: ignore[arg-type]


async def test_a_handle_is_authoritative() -> None:
    fake = FakeExecutor()
    await started(fake)
    handle_a = await fake.submit(request("a"))
    handle_b = await fake.submit(request("b"))
    assert (await fake.poll(key("a"), handle_a)).phase == "queued"
    # a handle of another attempt, or one never issued, finds nothing: the loop recorded it wrong
    assert (await fake.poll(key("a"), handle_b)).phase == "lost"
    assert (await fake.poll(key("a"), "fake:99")).phase == "lost"
    await fake.cancel(key("a"), handle_b)
    assert key("a") in fake.attempts and key("b") in fake.attempts


async def test_unknown_attempts_poll_lost_and_cancel_quietly() -> None:
    fake = FakeExecutor()
    await started(fake)
    assert await fake.poll(key("z")) == TaskStatus(phase="lost")
    await fake.cancel(key("z"), "fake:7")
    assert fake.cancelled == [(key("z"), "fake:7")]
    with pytest.raises(KeyError, match="holds no attempt"):
        fake.succeed(key("z"))


# --- scripting --------------------------------------------------------------------------------------


async def test_start_then_succeed_reports_each_step() -> None:
    clock = Clock()
    fake = FakeExecutor(clock=clock)
    loop = await started(fake)
    handle = await fake.submit(request())
    attempt = fake.start_attempt(key(), worker="w-1", gpu_ids=["0", "1"])
    assert isinstance(attempt, FakeAttempt) and attempt.handle == handle
    assert loop.reports == [key()]
    assert await fake.poll(key(), handle) == TaskStatus(
        phase="running", worker="w-1", gpu_ids=["0", "1"], started_at=T0 + timedelta(seconds=1), handle=handle
    )
    fake.succeed(key(), {"o0": b"\x02"})
    assert loop.reports == [key(), key()] == fake.reported
    status = await fake.poll(key(), handle)
    assert (status.phase, status.outputs, status.worker, status.started_at) == (
        "succeeded",
        {"o0": b"\x02"},
        "w-1",
        T0 + timedelta(seconds=1),
    )
    assert fake.in_flight == []
    fake.forget(key())
    assert fake.forgotten == [key()]
    assert (await fake.poll(key(), handle)).phase == "lost"


async def test_an_attempt_finished_while_queued_counts_as_started() -> None:
    fake = FakeExecutor(clock=Clock())
    loop = await started(fake)
    await fake.submit(request())
    fake.succeed(key(), dynamic_spec=b"spec")
    status = await fake.poll(key())
    assert (status.phase, status.dynamic_spec, status.started_at) == ("succeeded", b"spec", T0 + timedelta(seconds=1))
    assert loop.reports == [key()]


async def test_fail_with_a_message_or_an_error() -> None:
    fake = FakeExecutor()
    await started(fake)
    await fake.submit(request("a"))
    await fake.submit(request("b"))
    fake.fail(key("a"), "worker died", kind="system", retryable=True)
    assert (await fake.poll(key("a"))).error == ErrorInfo(kind="system", message="worker died", node_id="a")
    error = ErrorInfo(kind="user", message="bad input", retryable=False)
    fake.fail(key("b"), error)
    assert (await fake.poll(key("b"))).error == error
    with pytest.raises(RuntimeError, match="it already failed"):
        fake.succeed(key("b"))
    with pytest.raises(RuntimeError, match="it already failed"):
        fake.start_attempt(key("b"))


async def test_reporting_can_be_turned_off() -> None:
    fake = FakeExecutor(reports=False)
    loop = await started(fake)
    await fake.submit(request("a"))
    await fake.submit(request("b"))
    fake.start_attempt(key("a"))
    fake.succeed(key("a"))
    fake.start_attempt(key("b"), report=True)  # one call can override the default
    assert loop.reports == [key("b")]
    fake.reports = True
    fake.fail(key("b"), report=False)
    assert loop.reports == [key("b")]


async def test_lose_forgets_without_a_call_back() -> None:
    fake = FakeExecutor()
    loop = await started(fake)
    handle = await fake.submit(request())
    fake.start_attempt(key())
    lost = fake.lose(key())
    assert lost.phase == "running"
    assert loop.reports == [key()]  # only the start
    assert await fake.poll(key(), handle) == TaskStatus(phase="lost")
    assert await fake.poll(key()) == TaskStatus(phase="lost")
    # the key is free again: a resubmission is a new attempt with a new handle
    assert await fake.submit(request()) == "fake:2"


async def test_forget_leaves_attempts_in_flight_alone() -> None:
    fake = FakeExecutor()
    await started(fake)
    await fake.submit(request())
    fake.forget(key())
    assert (await fake.poll(key())).phase == "queued"


# --- cancel -----------------------------------------------------------------------------------------


async def test_cancel_forgets_without_a_call_back() -> None:
    fake = FakeExecutor()
    loop = await started(fake)
    handle = await fake.submit(request())
    fake.start_attempt(key())
    await fake.cancel(key(), handle)
    assert fake.cancelled == [(key(), handle)]
    assert (await fake.poll(key(), handle)).phase == "lost"
    assert loop.reports == [key()]


async def test_a_failing_cancel_keeps_the_attempt() -> None:
    fake = FakeExecutor()
    await started(fake)
    handle = await fake.submit(request())
    fake.start_attempt(key())
    fake.fail_next_cancel = ConnectionError("ray head unreachable")
    with pytest.raises(ConnectionError, match="ray head unreachable"):
        await fake.cancel(key(), handle)
    assert fake.fail_next_cancel is None  # one failure only
    assert (await fake.poll(key(), handle)).phase == "running"
    await fake.cancel(key(), handle)  # the next round tries again
    assert fake.cancelled == [(key(), handle), (key(), handle)]
    assert (await fake.poll(key(), handle)).phase == "lost"


async def test_a_failing_submit_starts_nothing() -> None:
    fake = FakeExecutor()
    await started(fake)
    fake.fail_next_submit = TimeoutError("no actor")
    with pytest.raises(TimeoutError, match="no actor"):
        await fake.submit(request())
    assert len(fake.submitted) == 1 and fake.attempts == {}
    assert await fake.submit(request()) == "fake:1"


# --- close and restart ------------------------------------------------------------------------------


async def test_durable_attempts_outlive_close() -> None:
    fake = FakeExecutor(durable=True)
    first = await started(fake)
    running = await fake.submit(request("a"))
    done = await fake.submit(request("b"))
    fake.start_attempt(key("a"), worker="ray-actor-3", gpu_ids=["0"])
    fake.start_attempt(key("b"))
    await fake.close()
    assert not fake.started
    # the work goes on while no controller runs; nobody hears about it
    fake.succeed(key("b"), {"o0": b"\x05"})
    assert first.reports == [key("a"), key("b")]
    with pytest.raises(RuntimeError, match="before start"):
        await fake.submit(request("c"))

    second = await started(fake)  # a new controller on the same executor: it polls what NodeRunning recorded
    status = await fake.poll(key("a"), running)
    assert (status.phase, status.worker, status.gpu_ids, status.handle) == ("running", "ray-actor-3", ["0"], running)
    assert (await fake.poll(key("b"), done)).outputs == {"o0": b"\x05"}
    assert second.reports == []  # an outcome reached while closed is found by polling
    fake.succeed(key("a"))
    assert second.reports == [key("a")] and first.reports == [key("a"), key("b")]
    assert await fake.submit(request("c")) == "fake:3"  # handles are never reused


async def test_close_forgets_attempts_unless_durable() -> None:
    fake = FakeExecutor()
    await started(fake)
    handle = await fake.submit(request())
    fake.start_attempt(key())
    await fake.close()
    loop = await started(fake)
    assert await fake.poll(key(), handle) == TaskStatus(phase="lost")
    assert fake.attempts == {} and loop.reports == []


# --- options ----------------------------------------------------------------------------------------


async def test_start_gate() -> None:
    fake = FakeExecutor(gates_start=True)
    assert fake.gates_start
    await started(fake)
    await fake.submit(request())
    fake.start_attempt(key())  # a worker may pick it up; its body waits for release
    with pytest.raises(RuntimeError, match=r"has not called release\(key\)"):
        fake.succeed(key())
    fake.release(key())
    assert fake.released == [key()] and fake.attempt(key()).released
    fake.succeed(key())
    fake.release(key("unknown"))  # recorded, otherwise ignored
    assert fake.released == [key(), key("unknown")]


async def test_starts_on_submit() -> None:
    fake = FakeExecutor(starts_on_submit=lambda r: r.key.node_id == "fast", clock=Clock())
    loop = await started(fake)
    assert fake.starts_on_submit(request("fast")) and not fake.starts_on_submit(request("slow"))
    await fake.submit(request("fast"))
    await fake.submit(request("slow"))
    fast = await fake.poll(key("fast"))
    assert (fast.phase, fast.started_at) == ("running", T0 + timedelta(seconds=1))
    assert (await fake.poll(key("slow"))).phase == "queued"
    assert loop.reports == []  # the planner records NodeRunning in the submitting round itself
    fake.immediate = True
    assert fake.starts_on_submit(request("slow"))


async def test_can_run() -> None:
    assert FakeExecutor().can_run(REF)
    assert not FakeExecutor(can_run=False).can_run(REF)
    fake = FakeExecutor(can_run=lambda task: task.name != "gpu_t")
    assert fake.can_run(REF) and not fake.can_run(OTHER_REF)
    fake.runnable = False
    assert not fake.can_run(REF)


async def test_auto_succeed_finishes_on_a_later_loop_iteration() -> None:
    fake = FakeExecutor(auto_succeed={"o0": b"\x07"})
    loop = await started(fake)
    handle = await fake.submit(request())
    assert (await fake.poll(key(), handle)).phase == "queued"  # not inside submit: the round is still going
    await fake.wait_until(lambda: loop.reports == [key()])
    status = await fake.poll(key(), handle)
    assert (status.phase, status.outputs, status.worker) == ("succeeded", {"o0": b"\x07"}, "fake-worker")
    assert status.started_at is not None


async def test_auto_succeed_by_request_can_fail() -> None:
    def outcome(req: TaskRequest) -> dict[str, bytes] | TaskStatus:
        if req.key.node_id == "bad":
            return TaskStatus(phase="failed", error=ErrorInfo(kind="user", message="nope"))
        return {"o0": req.inputs["x"]}

    fake = FakeExecutor(auto_succeed=outcome)
    loop = await started(fake)
    await fake.submit(request("good"))
    await fake.submit(request("bad"))
    await fake.wait_until(lambda: len(loop.reports) == 2)
    assert (await fake.poll(key("good"))).outputs == {"o0": b"\x01"}
    assert (await fake.poll(key("bad"))).error == ErrorInfo(kind="user", message="nope")


async def test_auto_succeed_with_a_start_gate_waits_for_release() -> None:
    fake = FakeExecutor(auto_succeed={}, gates_start=True)
    loop = await started(fake)
    await fake.submit(request())
    await fake.wait_until(lambda: loop.reports == [key()])
    assert (await fake.poll(key())).phase == "running"
    await asyncio.sleep(0)  # give a wrongly scheduled finish its chance to run
    assert (await fake.poll(key())).phase == "running"
    fake.release(key())
    await fake.wait_until(lambda: len(loop.reports) == 2)
    assert (await fake.poll(key())).phase == "succeeded"


async def test_auto_succeed_skips_cancelled_attempts() -> None:
    fake = FakeExecutor(auto_succeed={})
    loop = await started(fake)
    await fake.submit(request())
    await fake.cancel(key())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert loop.reports == [] and (await fake.poll(key())).phase == "lost"


async def test_wait_until_times_out() -> None:
    fake = FakeExecutor()
    await started(fake)
    with pytest.raises(TimeoutError):
        await fake.wait_until(lambda: bool(fake.submitted), timeout=0.05)


async def test_wait_until_wakes_on_calls() -> None:
    fake = FakeExecutor()
    await started(fake)

    async def controller() -> None:
        await asyncio.sleep(0)
        await fake.submit(request())

    task = asyncio.create_task(controller())
    await fake.wait_until(lambda: len(fake.submitted) == 1, timeout=5)
    await task


# --- what the in-memory store adds to the EventStore contract ---------------------------------------


def created(eid: str) -> ExecutionCreated:
    spec = WorkflowSpec(name="w", inputs=[], outputs=[], nodes=[], output_bindings={})
    return ExecutionCreated(
        execution_id=eid,
        version=1,
        at=T0,
        project="p",
        domain="d",
        workflow="w",
        workflow_version="v",
        spec=spec,
        inputs={},
    )


async def test_stores_on_one_log_share_it() -> None:
    clock = Clock()
    log = InMemoryLog(clock=clock)
    async with InMemoryEventStore(log) as first, InMemoryEventStore(log).sibling() as second:
        assert isinstance(first, EventStore) and first.log is log and second.log is log
        await first.append("ex-1", 0, [created("ex-1")])
        await second.append("ex-1", 1, [NodeQueued(execution_id="ex-1", version=2, at=T0, node_id="a", attempt=1)])
        assert [e.version for e in await first.read("ex-1")] == [1, 2]
        summary = await first.get_summary("ex-1")
        assert summary is not None and summary.updated_at == T0 + timedelta(seconds=2)
        # records are stored encoded, as a database would hold them
        assert [r.kind for r in log.records] == ["ExecutionCreated", "NodeQueued"]
        assert decode_event(log.records[0].payload) == created("ex-1")
        assert await first.claim("ex-1")
        assert log.lease_holder("ex-1") is first
        assert not await second.claim("ex-1")
    assert log.lease_holder("ex-1") is None  # closing dropped it


async def test_a_fresh_store_has_a_private_log() -> None:
    async with InMemoryEventStore() as first, InMemoryEventStore() as second:
        await first.append("ex-1", 0, [created("ex-1")])
        assert await second.read("ex-1") == []
        assert first.log is not second.log
