"""What is LocalExecutor's own, beyond the executor contract (tests/contract): its options, its
worker threads and processes, the event-loop watchdog, and a process that must be able to exit."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import plugins
from engine import task
from engine.interfaces import Executor, TaskRequest, TaskStatus
from engine.models import TaskRef
from plugins.local import LocalExecutor
from tests.contract import _tasks as contract_tasks
from tests.contract._harness import FINAL, Harness, output, request
from tests.contract._probe import WAIT, Probe
from tests.plugins import _tasks

ROOT = Path(__file__).resolve().parents[2]
MODES = pytest.mark.parametrize("mode", ["thread", "process"])

Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start LocalExecutors with the given options; all are closed after the test."""
    started: list[Harness] = []

    async def make(**options: Any) -> Harness:
        harness = Harness(LocalExecutor(**options))
        await harness.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.executor.close()


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    probe = Probe()
    await probe.start()
    yield probe
    await probe.close()


# --- options and interface -------------------------------------------------------------------------


def test_exports() -> None:
    assert plugins.__all__ == ["LocalExecutor"]
    assert issubclass(LocalExecutor, Executor)
    assert (LocalExecutor.name, LocalExecutor.gates_start) == ("local", True)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode must be 'thread' or 'process'"):
        LocalExecutor(mode="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one worker"):
        LocalExecutor(max_workers=0)
    with pytest.raises(ValueError, match="positive number of seconds, or None"):
        LocalExecutor(loop_stall_threshold=0)


async def test_submit_before_start_or_after_close(start: Start) -> None:
    with pytest.raises(RuntimeError, match=r"await executor.start\(report\)"):
        await LocalExecutor().submit(request(contract_tasks.add, a=1, b=2))
    harness = await start()
    await harness.executor.close()
    with pytest.raises(RuntimeError, match="after close"):
        await harness.executor.submit(request(contract_tasks.add, a=1, b=2))


async def test_handle_names_the_process_that_holds_the_attempt(start: Start) -> None:
    harness = await start()
    handle = await harness.submit(request(contract_tasks.add, "node", 2, a=1, b=2))
    assert handle == f"local:{os.getpid()}"  # attempts live and die with this process; found by key


@MODES
def test_only_async_tasks_start_on_submit(mode: str) -> None:
    executor = LocalExecutor(mode=mode)  # type: ignore[arg-type]
    assert executor.starts_on_submit(request(contract_tasks.async_add, a=1, b=2))
    assert not executor.starts_on_submit(request(contract_tasks.add, a=1, b=2))
    assert not executor.starts_on_submit(request(contract_tasks.fan_out, kind="dynamic", n=1))


def test_can_run() -> None:
    executor = LocalExecutor()
    assert executor.can_run(contract_tasks.add.ref)
    assert not executor.can_run(TaskRef("ghost", "tests.plugins.no_such_module", "ghost", "h"))
    assert not executor.can_run(TaskRef("ghost", "tests.plugins._tasks", "no_such_task", "h"))
    assert executor.can_run(TaskRef("ghost", "__main__", "ghost", "h", pickled=b"x"))


def test_can_run_a_task_of_a_module_another_thread_is_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker thread importing a task module for its first attempt must not make the loop, which
    asks can_run of every new execution meanwhile, take the module for one without the task: it
    would leave the execution to other engines for good (a serve then never took it over)."""
    name = "slipstream_half_imported_tasks"
    (tmp_path / f"{name}.py").write_text(
        "import threading\n"
        "started, proceed = threading.Event(), threading.Event()\n"
        "started.set()\n"
        "proceed.wait(10)\n"
        "def step(x):\n"
        "    return x + 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    importing = threading.Thread(target=__import__, args=(name,))
    importing.start()
    try:
        for _ in range(1000):
            module = sys.modules.get(name)
            if module is not None and hasattr(module, "started") and module.started.is_set():
                break
            importing.join(0.01)
        else:
            pytest.fail("the module never started importing")
        assert not hasattr(module, "step")  # halfway: the task's name is not bound yet
        assert LocalExecutor().can_run(TaskRef("step", name, "step", "h"))
    finally:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "proceed"):
            module.proceed.set()
        importing.join(10)
        sys.modules.pop(name, None)


# --- workers -------------------------------------------------------------------------------------


@MODES
async def test_an_attempt_waits_for_a_free_worker_and_reports_its_real_start(
    start: Start, probe: Probe, mode: str
) -> None:
    """So that the loop records NodeRunning, and starts the timeout clock, at the real start."""
    harness = await start(mode=mode, max_workers=1)
    first = request(contract_tasks.wait_for_go, "first", probe=probe.address, name="first")
    second = request(contract_tasks.add, "second", a=1, b=1)
    await harness.submit(first)
    await harness.wait(first.key, ["running"])
    harness.executor.release(first.key)
    await probe.reached("first")
    await harness.submit(second)
    assert (await harness.executor.poll(second.key)).phase == "queued"
    assert second.key not in harness.reports
    probe.let_go("first")
    await harness.wait(second.key, ["running", *FINAL])
    assert second.key in harness.reports
    harness.executor.release(second.key)
    assert output(await harness.wait(second.key, FINAL), contract_tasks.add) == 2


@MODES
async def test_async_tasks_run_on_the_loop_in_both_modes(start: Start, mode: str) -> None:
    harness = await start(mode=mode)
    status = await harness.run(request(contract_tasks.async_add, a=20, b=22))
    assert output(status, contract_tasks.async_add) == 42
    assert status.worker == f"MainProcess[{os.getpid()}]/asyncio"


async def test_thread_cancel_gives_up_the_thread_and_a_fresh_one_takes_its_place(start: Start, probe: Probe) -> None:
    harness = await start(mode="thread", max_workers=1)
    stuck = request(contract_tasks.wait_for_go, "stuck", probe=probe.address, name="stuck")
    running = await _start_body(harness, stuck)
    await probe.reached("stuck")
    await harness.executor.cancel(stuck.key)
    # The only thread is still in the cancelled body, yet the next attempt runs: on a new thread.
    after = await harness.run(request(contract_tasks.add, "after", a=1, b=1))
    assert output(after, contract_tasks.add) == 2
    assert after.worker != running.worker and "slipstream-local-" in after.worker
    probe.let_go("stuck")
    await probe.gone("stuck")
    await harness.run(request(contract_tasks.add, "later", a=1, b=1))
    assert harness.reports.count(stuck.key) == 1, "its result is discarded"


async def test_process_cancel_terminates_the_worker_and_replaces_it(start: Start, probe: Probe) -> None:
    harness = await start(mode="process", max_workers=1)
    first = await harness.run(request(_tasks.pid, "pid1"))
    held = request(_tasks.hold_and_tell_pid, "held", probe=probe.address, name="held")
    await harness.submit(held)
    await probe.reached("held")
    assert f"held:pid={output(first, _tasks.pid)}" in probe.seen, "the attempt ran on the existing worker"
    await harness.executor.cancel(held.key)
    await probe.gone("held")  # its process died without being let go
    second = await harness.run(request(_tasks.pid, "pid2"))
    assert output(second, _tasks.pid) != output(first, _tasks.pid)
    assert second.worker != first.worker


@MODES
async def test_cancel_of_a_finished_attempt_leaves_its_worker_alone(start: Start, probe: Probe, mode: str) -> None:
    harness = await start(mode=mode, max_workers=1)
    done = request(contract_tasks.add, "done", a=1, b=1)
    await harness.run(done)
    held = request(contract_tasks.wait_for_go, "held", probe=probe.address, name="held")
    await _start_body(harness, held)
    await probe.reached("held")
    await harness.executor.cancel(done.key)  # the loop may cancel an attempt that just ended
    probe.let_go("held")
    assert output(await harness.wait(held.key, FINAL), contract_tasks.wait_for_go) == 1


@pytest.mark.parametrize(
    ("crash", "detail"),
    [
        (request(contract_tasks.die, "die", x=1), "exit code 1"),
        (request(_tasks.segfault, "die"), "killed by signal SIGSEGV"),
    ],
    ids=["exit", "segfault"],
)
async def test_a_dead_process_worker_is_replaced(start: Start, crash: TaskRequest, detail: str) -> None:
    harness = await start(mode="process", max_workers=1)
    first = await harness.run(request(_tasks.pid, "pid1"))
    died = await harness.run(crash)
    assert died.error is not None and (died.error.kind, died.error.retryable) == ("system", True)
    assert re.match(
        rf"local process worker slipstream-local-process-\d+ died while running the attempt \({detail}\)",
        died.error.message,
    )
    second = await harness.run(request(_tasks.pid, "pid2"))
    assert output(second, _tasks.pid) != output(first, _tasks.pid)


async def test_process_mode_runs_a_task_that_is_not_importable(start: Start) -> None:
    harness = await start(mode="process", max_workers=1)
    offset = 100

    @task
    def local_add(x: int) -> int:  # defined in a function: the worker gets it cloudpickled
        return x + offset

    assert local_add.ref.pickled is not None
    assert output(await harness.run(request(local_add, "local", x=1)), local_add) == 101


# --- close ---------------------------------------------------------------------------------------


async def test_close_cancels_everything_and_never_waits_for_a_stuck_thread(start: Start, probe: Probe) -> None:
    harness = await start(mode="thread", max_workers=2)
    stuck = request(contract_tasks.wait_for_go, "stuck", probe=probe.address, name="stuck")
    gated = request(contract_tasks.touch, "gated", probe=probe.address, name="gated")
    slow = request(contract_tasks.async_wait_for_go, "slow", probe=probe.address, name="slow")
    await _start_body(harness, stuck)
    await harness.submit(gated)
    await harness.wait(gated.key, ["running"])  # waits at the gate, never released
    await harness.submit(slow)
    await probe.reached("stuck")
    await probe.reached("slow")
    await harness.executor.close()
    assert "slow:cancelled" in probe.seen, "the async task was cancelled and unwound"
    assert "gated" not in probe.seen
    for key in (stuck.key, gated.key, slow.key):
        assert (await harness.executor.poll(key)).phase == "lost"


async def test_close_terminates_process_workers(start: Start, probe: Probe) -> None:
    harness = await start(mode="process", max_workers=1)
    held = request(_tasks.hold_and_tell_pid, "held", probe=probe.address, name="held")
    await harness.submit(held)
    await probe.reached("held")
    await harness.executor.close()
    await probe.gone("held")


@pytest.mark.parametrize("close", [True, False], ids=["closed", "not-closed"])
def test_a_stuck_sync_task_never_keeps_the_process_from_exiting(close: bool) -> None:
    script = f"""
import asyncio, threading
from engine.interfaces import TaskKey, TaskRequest
from engine import to_literal
from plugins.local import LocalExecutor
from tests.plugins import _tasks

async def main():
    loop = asyncio.get_running_loop()
    executor = LocalExecutor(mode="thread")
    await executor.start(lambda key: None)
    key = TaskKey("e", "stuck", 1)
    inputs = {{"x": to_literal(1, int)}}
    await executor.submit(TaskRequest(key=key, task=_tasks.sleep_forever.ref, inputs=inputs, timeout=0.1))
    executor.release(key)
    started = loop.create_future()
    def wait_started():
        _tasks.STARTED.wait({WAIT})
        loop.call_soon_threadsafe(started.set_result, None)
    threading.Thread(target=wait_started, daemon=True).start()
    await started
    await executor.cancel(key)  # what the control loop does when the timeout passes
    if {close}:
        await executor.close()

asyncio.run(main())
print("main returned", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "main returned"


# --- the event-loop watchdog ---------------------------------------------------------------------


class _Records(logging.Handler):
    """Collects warnings; the watchdog logs from its own thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.arrived = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.arrived.set()


async def test_watchdog_warns_once_naming_an_async_task_that_blocks_the_loop(start: Start) -> None:
    harness = await start(mode="thread", loop_stall_threshold=0.1)
    logger = logging.getLogger("slipstream.executor.local")
    handler = _Records()
    logger.addHandler(handler)
    try:
        await harness.run(request(_tasks.well_behaved, "fine", x=1))
        assert handler.records == []
        status = await harness.run(request(_tasks.block_loop, "stall", seconds=0.5))
        assert status.phase == "succeeded"
        assert await _to_thread_wait(handler.arrived), "no warning"
    finally:
        logger.removeHandler(handler)
    (record,) = handler.records
    message = record.getMessage()
    assert "async task 'block_loop' (execution exec-1, node stall, attempt 1)" in message
    stalled = re.search(r"blocked the event loop for (\d+\.\d) s", message)
    assert stalled is not None and float(stalled.group(1)) >= 0.1, message
    assert "\n" not in message


async def test_watchdog_costs_nothing_without_async_tasks(start: Start) -> None:
    before = set(threading.enumerate())
    harness = await start(mode="thread", loop_stall_threshold=0.1)
    await harness.run(request(contract_tasks.add, a=1, b=1))
    new = {t.name for t in set(threading.enumerate()) - before}
    assert "slipstream-loop-watchdog" not in new


# --- helpers -------------------------------------------------------------------------------------


async def _start_body(harness: Harness, req: TaskRequest) -> TaskStatus:
    """Submit, wait until running, release: the body runs."""
    await harness.submit(req)
    running = await harness.wait(req.key, ["running"])
    harness.executor.release(req.key)
    return running


async def _to_thread_wait(event: threading.Event) -> bool:
    """Wait for a `threading.Event` set by another thread without blocking the loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def wait() -> None:
        result = event.wait(WAIT)
        loop.call_soon_threadsafe(done.set_result, result)

    threading.Thread(target=wait, daemon=True).start()
    return await done
