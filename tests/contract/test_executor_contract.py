"""The `Executor` contract (engine/interfaces.py), run against every executor backend.

A backend joins with one line in `BACKENDS`. Its traits say how it shows the parts of the contract
that differ between backends: whether sync bodies share the engine's process (then they wait at
the start gate, ``cancel`` can only discard their result, and a test must not let one kill the
process), and likewise for async bodies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from engine import to_literal
from engine.interfaces import Executor, TaskKey, TaskStatus
from engine.models import TaskRef, WorkflowSpec
from plugins.local import LocalExecutor
from tests.contract import _tasks
from tests.contract._harness import FINAL, Harness, output, request
from tests.contract._probe import Probe
from tests.plugins.ray._session import ray_session


@dataclass(frozen=True)
class Backend:
    """One executor under test.

    Attributes:
        name: the test id.
        make: a fresh, unstarted executor with at least two workers.
        sync_in_process: sync bodies run in the engine's process (gated; cancel discards).
        async_in_process: async bodies run in the engine's process (gated).
    """

    name: str
    make: Callable[[], Executor]
    sync_in_process: bool
    async_in_process: bool = True


def _ray_executor() -> Executor:
    from plugins.ray import RayExecutor
    from tests.plugins.ray._session import ensure_ray

    ensure_ray()  # two logical CPUs: two actors of the default shape
    return RayExecutor()


BACKENDS = [
    Backend("local-thread", lambda: LocalExecutor(mode="thread", max_workers=2), sync_in_process=True),
    Backend("local-process", lambda: LocalExecutor(mode="process", max_workers=2), sync_in_process=False),
    Backend("ray", _ray_executor, sync_in_process=False, async_in_process=False),
]

SYNC_ASYNC = pytest.mark.parametrize("kind", ["sync", "async"])


@pytest.fixture(scope="module", autouse=True)
def _ray_session() -> Iterator[None]:
    yield from ray_session()


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    probe = Probe()
    await probe.start()
    yield probe
    await probe.close()


@pytest.fixture
async def harness(backend: Backend) -> AsyncIterator[Harness]:
    harness = Harness(backend.make())
    await harness.start()
    yield harness
    await harness.executor.close()


def pick(kind: str, sync_task: Any, async_task: Any) -> Any:
    return sync_task if kind == "sync" else async_task


def in_process(backend: Backend, kind: str) -> bool:
    return backend.sync_in_process if kind == "sync" else backend.async_in_process


def failed(status: TaskStatus) -> tuple[str, bool, str]:
    assert status.phase == "failed" and status.error is not None, status
    return status.error.kind, status.error.retryable, status.error.message


# --- starts and the start gate ---------------------------------------------------------------------


@SYNC_ASYNC
async def test_start_is_reported_when_the_work_starts(harness: Harness, probe: Probe, kind: str) -> None:
    req = request(pick(kind, _tasks.wait_for_go, _tasks.async_wait_for_go), probe=probe.address, name="held")
    handle = await harness.submit(req)
    running = await harness.wait(req.key, ["running"])
    assert req.key in harness.reports, "a start is reported (or, starting on submit, recorded by the loop)"
    assert running.handle == handle
    assert running.worker and running.started_at is not None
    harness.executor.release(req.key)
    await probe.reached("held")
    assert (await harness.executor.poll(req.key, handle)).phase == "running"
    probe.let_go("held")
    done = await harness.wait(req.key, FINAL)
    assert output(done, _tasks.wait_for_go) == 1
    assert (done.handle, done.worker, done.started_at) == (handle, running.worker, running.started_at)
    assert harness.reports.count(req.key) == 2, "reported at its start and at its end"


@SYNC_ASYNC
async def test_body_waits_for_release(backend: Backend, harness: Harness, probe: Probe, kind: str) -> None:
    if not (harness.executor.gates_start and in_process(backend, kind)):
        pytest.skip("this backend runs these bodies outside the engine's process: no start gate")
    req = request(pick(kind, _tasks.touch, _tasks.async_touch), probe=probe.address, name="body")
    await harness.submit(req, release=False)
    await harness.wait(req.key, ["running"])
    # another attempt runs to its end meanwhile: time enough for a body that ignored the gate
    await harness.run(request(pick(kind, _tasks.touch, _tasks.async_touch), "other", probe=probe.address, name="other"))
    assert "body" not in probe.seen
    harness.executor.release(req.key)
    assert output(await harness.wait(req.key, FINAL), _tasks.touch) == 1
    assert probe.seen == ["other", "body"]


@SYNC_ASYNC
async def test_cancel_at_the_gate_never_runs_the_body(
    backend: Backend, harness: Harness, probe: Probe, kind: str
) -> None:
    if not (harness.executor.gates_start and in_process(backend, kind)):
        pytest.skip("this backend runs these bodies outside the engine's process: no start gate")
    req = request(pick(kind, _tasks.touch, _tasks.async_touch), probe=probe.address, name="body")
    await harness.submit(req, release=False)
    await harness.wait(req.key, ["running"])
    await harness.executor.cancel(req.key)
    harness.executor.release(req.key)  # too late: unknown now, ignored
    after = await harness.run(
        request(pick(kind, _tasks.touch, _tasks.async_touch), "after", probe=probe.address, name="after")
    )
    assert after.phase == "succeeded"
    assert probe.seen == ["after"]
    assert (await harness.executor.poll(req.key)).phase == "lost"


# --- outcomes --------------------------------------------------------------------------------------


@SYNC_ASYNC
async def test_success_returns_output_literals(harness: Harness, kind: str) -> None:
    status = await harness.run(request(pick(kind, _tasks.add, _tasks.async_add), a=2, b=3))
    assert status.outputs == {"o0": to_literal(5, int)}
    assert status.error is None


@SYNC_ASYNC
async def test_user_exception_is_a_retryable_user_error_with_its_traceback(harness: Harness, kind: str) -> None:
    status = await harness.run(request(pick(kind, _tasks.boom, _tasks.async_boom), "bad", x=7))
    assert failed(status) == ("user", True, "ValueError: bad x 7")
    assert status.error is not None and status.error.node_id == "bad"
    tb = status.error.traceback
    assert 'raise ValueError(f"bad x {x}")' in tb and "_tasks.py" in tb
    assert tb.splitlines()[1].lstrip().startswith('File "') and "_tasks.py" in tb.splitlines()[1], (
        "the traceback starts at the task's own frame"
    )
    assert "engine/runtime.py" not in tb and "plugins/" not in tb


async def test_values_that_do_not_fit_are_not_retryable(harness: Harness) -> None:
    out = await harness.run(request(_tasks.wrong_output, "out", x=1))
    kind, retryable, message = failed(out)
    assert (kind, retryable) == ("user", False)
    assert "outputs of task 'wrong_output' do not encode" in message

    req = request(_tasks.add, "in", a=1, b=2)
    req = msgspec.structs.replace(req, inputs={**req.inputs, "a": to_literal("x", str)})
    kind, retryable, message = failed(await harness.run(req))
    assert (kind, retryable) == ("user", False)
    assert "inputs of task 'add' do not decode" in message


async def test_a_task_that_cannot_be_loaded_is_not_retryable(harness: Harness) -> None:
    ref = TaskRef(name="ghost", module="tests.contract.no_such_module", qualname="ghost", source_hash="x")
    req = msgspec.structs.replace(request(_tasks.add, "ghost", a=1, b=1), task=ref, inputs={})
    kind, retryable, message = failed(await harness.run(req))
    assert (kind, retryable) == ("user", False)
    assert "task 'ghost'" in message and "could not be loaded" in message and "importable" in message


async def test_dynamic_request_returns_a_decodable_spec(harness: Harness) -> None:
    status = await harness.run(request(_tasks.fan_out, "dyn", kind="dynamic", n=3))
    assert status.phase == "succeeded" and status.dynamic_spec is not None, status
    spec = msgspec.msgpack.decode(status.dynamic_spec, type=WorkflowSpec)
    assert len(spec.nodes) == 3


# --- context and secrets ---------------------------------------------------------------------------


@SYNC_ASYNC
async def test_task_reads_its_context(harness: Harness, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPSTREAM_TEST_TOKEN", "s3cret")  # after the executor started
    task = pick(kind, _tasks.context_ids, _tasks.async_context_ids)
    req = msgspec.structs.replace(
        request(task, "ctx", 3), project="proj", domain="staging", secrets=("SLIPSTREAM_TEST_TOKEN",)
    )
    status = await harness.run(req)
    assert output(status, task) == ["exec-1", "ctx", "3", "proj", "staging", "SLIPSTREAM_TEST_TOKEN=s3cret"]


@SYNC_ASYNC
async def test_a_missing_secret_fails_naming_it(harness: Harness, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIPSTREAM_TEST_MISSING", raising=False)
    monkeypatch.setenv("SLIPSTREAM_TEST_TOKEN", "s3cret")
    task = pick(kind, _tasks.context_ids, _tasks.async_context_ids)
    req = msgspec.structs.replace(request(task, "sec"), secrets=("SLIPSTREAM_TEST_TOKEN", "SLIPSTREAM_TEST_MISSING"))
    kind_, retryable, message = failed(await harness.run(req))
    assert (kind_, retryable) == ("user", False)
    assert "SLIPSTREAM_TEST_MISSING" in message and "SLIPSTREAM_TEST_TOKEN" not in message
    assert "set the environment variable SLIPSTREAM_TEST_MISSING" in message


# --- idempotency, unknown attempts, forget ---------------------------------------------------------


@SYNC_ASYNC
async def test_submit_is_idempotent(harness: Harness, probe: Probe, kind: str) -> None:
    req = request(pick(kind, _tasks.touch, _tasks.async_touch), probe=probe.address, name="once")
    handle = await harness.submit(req)
    assert await harness.submit(req) == handle  # in flight
    status = await harness.run(req)
    assert await harness.submit(req) == handle  # finished
    assert (await harness.executor.poll(req.key)) == status
    # another attempt runs to its end after the duplicates: they would have run by then
    await harness.run(request(pick(kind, _tasks.touch, _tasks.async_touch), "next", probe=probe.address, name="next"))
    assert probe.seen.count("once") == 1
    assert harness.reports.count(req.key) == 2


async def test_poll_of_an_unknown_attempt_is_lost(harness: Harness) -> None:
    key = TaskKey("nope", "n", 1)
    assert await harness.executor.poll(key) == TaskStatus(phase="lost")
    assert await harness.executor.poll(key, "local:1:nope/n/1") == TaskStatus(phase="lost")
    await harness.executor.cancel(key)  # unknown: ignored
    harness.executor.forget(key)
    harness.executor.release(key)


async def test_forget_drops_a_finished_result(harness: Harness) -> None:
    req = request(_tasks.add, a=1, b=1)
    await harness.run(req)
    harness.executor.forget(req.key)
    assert (await harness.executor.poll(req.key)).phase == "lost"


# --- cancel ----------------------------------------------------------------------------------------


async def test_cancel_cancels_an_async_task(harness: Harness, probe: Probe) -> None:
    req = request(_tasks.async_wait_for_go, "slow", probe=probe.address, name="slow")
    await harness.submit(req)
    await probe.reached("slow")
    await harness.executor.cancel(req.key)
    await probe.reached("slow:cancelled")
    assert (await harness.executor.poll(req.key)).phase == "lost"
    after = await harness.run(request(_tasks.async_add, "after", a=1, b=1))
    assert after.phase == "succeeded"
    assert harness.reports.count(req.key) == 1, "a cancelled attempt reports no end"


async def test_cancel_stops_a_sync_task(backend: Backend, harness: Harness, probe: Probe) -> None:
    req = request(_tasks.wait_for_go, "slow", probe=probe.address, name="slow")
    await harness.submit(req)
    await harness.wait(req.key, ["running"])
    harness.executor.release(req.key)
    await probe.reached("slow")
    await harness.executor.cancel(req.key)
    assert (await harness.executor.poll(req.key)).phase == "lost"
    if backend.sync_in_process:
        # A thread cannot be stopped (documented): the body goes on, its result is discarded.
        probe.let_go("slow")
        await probe.gone("slow")
    else:
        # The worker is terminated: the task's connection drops without being let go.
        await probe.gone("slow")
    after = await harness.run(request(_tasks.add, "after", a=1, b=1))
    assert output(after, _tasks.add) == 2
    assert (await harness.executor.poll(req.key)).phase == "lost"
    assert harness.reports.count(req.key) == 1, "a cancelled attempt reports no end"


# --- workers that die ------------------------------------------------------------------------------


async def test_a_worker_that_dies_is_a_retryable_system_error(backend: Backend, harness: Harness) -> None:
    if backend.sync_in_process:
        pytest.skip("sync bodies run in this process: os._exit would end the test run")
    status = await harness.run(request(_tasks.die, "die", x=1))
    kind, retryable, message = failed(status)
    assert (kind, retryable) == ("system", True)
    assert "died" in message
    assert status.error is not None and status.error.node_id == "die"
    again = await harness.run(request(_tasks.add, "die", 2, a=1, b=2))
    assert output(again, _tasks.add) == 3


# --- map chunks ------------------------------------------------------------------------------------


@SYNC_ASYNC
async def test_a_chunk_reports_one_outcome_per_element(harness: Harness, kind: str) -> None:
    ok, bad = pick(kind, _tasks.add, _tasks.async_add), pick(kind, _tasks.boom, _tasks.async_boom)
    chunk = msgspec.structs.replace(
        request(ok, "map/c1", a=10),
        elements=[4, 7, 9],
        element_attempts=[1, 2, 1],
        mapped={"b": [to_literal(b, int) for b in (1, 2, 3)]},
    )
    status = await harness.run(chunk)
    assert status.phase == "succeeded" and status.error is None, status
    assert [(r.index, r.attempt, r.output) for r in status.elements] == [
        (4, 1, to_literal(11, int)),
        (7, 2, to_literal(12, int)),
        (9, 1, to_literal(13, int)),
    ]
    failing = msgspec.structs.replace(
        request(bad, "fail/c1"), elements=[0, 1], element_attempts=[1, 1], mapped={"x": [to_literal(5, int)] * 2}
    )
    status = await harness.run(failing)
    assert status.phase == "succeeded", "a chunk whose elements all failed still ran to its end"
    assert [(r.index, r.error.kind if r.error else None) for r in status.elements] == [(0, "user"), (1, "user")]
    assert status.elements[0].error is not None and status.elements[0].error.node_id == "fail/0"
