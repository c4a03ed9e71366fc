"""The Ray executor on an in-process Ray with two logical CPUs and two logical GPUs.

GPU scheduling is Ray's logical accounting: no GPU hardware is needed, and the ids the tasks see
are the ones Ray assigned (``current_context().gpu_ids``). Concurrency is shown without timing:
tasks hold at the probe until the test lets them go, so what runs at once is what has arrived.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

import plugins.ray
from engine import Engine, Resources
from engine.errors import ConfigError
from engine.interfaces import TaskKey
from plugins.ray import RayExecutor, Shape, shape_of
from plugins.ray._shape import Capacity
from tests.contract import _tasks as contract_tasks
from tests.contract._harness import FINAL, Harness, output, request
from tests.contract._probe import Probe
from tests.plugins.ray import _tasks
from tests.plugins.ray._session import ensure_ray, ray_session


@pytest.fixture(scope="module", autouse=True)
def _ray() -> Iterator[None]:
    yield from ray_session()


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    probe = Probe()
    await probe.start()
    yield probe
    await probe.close()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    ensure_ray()
    executor = RayExecutor()
    async with Engine.embedded(tmp_path, executors=[executor], executor="ray", retry_delay=0.05) as eng:
        yield eng


def ray_executor(engine: Engine) -> RayExecutor:
    executor = engine.executors["ray"]
    assert isinstance(executor, RayExecutor)
    return executor


async def arrivals(probe: Probe, count: int) -> list[str]:
    """Wait until ``count`` tasks told the probe; the names told so far."""
    await probe._until(lambda: len(probe.seen) >= count)
    return list(probe.seen)


def test_exports() -> None:
    assert plugins.ray.__all__ == ["RayExecutor", "Shape", "ray_available", "shape_of"]


def test_shapes_and_capacity() -> None:
    assert shape_of(Resources()) == Shape(cpus=1.0)
    assert shape_of(Resources(gpu=0.5)) == Shape(cpus=0.0, gpus=0.5), "a GPU actor reserves no CPU by default"
    assert shape_of(Resources(cpu=2, gpu=1, mem="1Gi")) == Shape(cpus=2.0, gpus=1.0, memory=1 << 30)
    capacity = Capacity({"CPU": 2.0, "GPU": 1.0, "memory": 1e9})
    quarter = Shape(cpus=0.0, gpus=0.25)
    for _ in range(4):
        assert capacity.fits(quarter)
        capacity.take(quarter)
    assert not capacity.fits(quarter), "four quarters fill one GPU"
    assert capacity.fits(quarter, freed=[quarter])
    assert not capacity.ever_fits(Shape(cpus=0.0, gpus=2.0))


def test_without_ray_installed_the_executor_is_a_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the package
    with pytest.raises(ConfigError, match=r"pip install 'slipstream\[ray\]'.*executor='local'"):
        RayExecutor()
    monkeypatch.delenv("SLIPSTREAM_NATS_URL", raising=False)
    monkeypatch.delenv("SLIPSTREAM_RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'slipstream\[ray\]'.*executor='local'"):
        Engine.connect(postgres="postgresql://localhost/test")  # executor="ray" by default
    assert "local" in Engine.connect(postgres="postgresql://localhost/test", executor="local").executors


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="idle_timeout=0"):
        RayExecutor(idle_timeout=0)
    with pytest.raises(ValueError, match="max_actors=0"):
        RayExecutor(max_actors=0)


def test_the_cluster_address_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPSTREAM_RAY_ADDRESS", "ray://from-env:10001")
    assert RayExecutor().address == "ray://from-env:10001"
    assert RayExecutor("auto").address == "auto"
    monkeypatch.delenv("SLIPSTREAM_RAY_ADDRESS")
    assert RayExecutor().address is None  # a local Ray, or the one this process initialised


async def test_a_map_runs_in_chunks_on_the_actors(engine: Engine) -> None:
    xs = [*range(300), -1]
    handle = await engine.launch(_tasks.mapped, xs=xs)
    assert await handle.outputs(timeout=60) == [*range(1, 301), None]
    history = await engine.history(handle.execution_id)
    chunks = [e for e in history if type(e).__name__ == "ChunkFinished"]
    assert 1 < len(chunks) < len(xs), "elements go out in chunks, each one actor call"
    assert ray_executor(engine).pool_sizes() == {"cpu1": 2}


async def test_whole_gpus_run_at_most_two_at_once_on_distinct_ids(engine: Engine, probe: Probe) -> None:
    handle = await engine.launch(_tasks.four_on_gpus, probe=probe.address)
    released = 0
    for arrived in (2, 3, 4):
        seen = await arrivals(probe, arrived)
        assert len(seen) - released == 2, f"at most two whole-GPU tasks at once: {seen}, {released} let go"
        held = seen[released:]
        assert len({name.split("@")[1] for name in held}) == 2, f"each holds its own GPU: {held}"
        assert ray_executor(engine).pool_sizes() == {"cpu0-gpu1": 2}
        probe.let_go(seen[released])
        await probe.gone(seen[released])
        released += 1
    for name in probe.seen[released:]:
        probe.let_go(name)
    results = await handle.outputs(timeout=60)
    assert sorted({ids for _, ids in results}) == ["0", "1"]


async def test_half_gpus_run_four_at_once_two_per_id(engine: Engine, probe: Probe) -> None:
    handle = await engine.launch(_tasks.six_on_half_gpus, probe=probe.address)
    seen = await arrivals(probe, 4)
    assert len(seen) == 4
    assert Counter(name.split("@")[1] for name in seen) == {"0": 2, "1": 2}, seen
    assert ray_executor(engine).pool_sizes() == {"cpu0-gpu0.5": 4}
    for name in seen:
        probe.let_go(name)
    rest = (await arrivals(probe, 6))[4:]
    for name in rest:
        probe.let_go(name)
    results = await handle.outputs(timeout=60)
    assert len({pid for pid, _ in results}) == 4, "six tasks on the four warm actors"


async def test_a_second_workflow_gpu_task_starts_on_the_warm_actor(engine: Engine) -> None:
    first = await (await engine.launch(_tasks.where_on_gpu)).outputs(timeout=60)
    second = await (await engine.launch(_tasks.where_on_gpu)).outputs(timeout=60)
    assert first == second, "same actor process, same GPU"
    assert ray_executor(engine).pool_sizes() == {"cpu0-gpu1": 1}


async def test_an_actor_killed_mid_task_is_retried_on_a_fresh_actor(engine: Engine, probe: Probe) -> None:
    handle = await engine.launch(_tasks.killed_once, probe=probe.address)
    (held,) = await arrivals(probe, 1)
    pid = int(held.split("@")[1])
    os.kill(pid, signal.SIGKILL)
    where = await handle.outputs(timeout=60)
    assert int(where[0]) != pid
    history = await engine.history(handle.execution_id)
    failures = [e for e in history if type(e).__name__ == "NodeFailed" and e.node_id != ""]
    assert failures and failures[0].error.kind == "system" and "died" in failures[0].error.message


async def test_a_restarted_engine_polls_and_cancels_by_handle(probe: Probe) -> None:
    ensure_ray()
    before, after = Harness(RayExecutor()), Harness(RayExecutor())
    await before.start()
    try:
        finishing = request(contract_tasks.wait_for_go, "finishing", probe=probe.address, name="finishing")
        stopping = request(contract_tasks.wait_for_go, "stopping", probe=probe.address, name="stopping")
        dropped = request(contract_tasks.async_wait_for_go, "dropped", probe=probe.address, name="dropped")
        handle = await before.submit(finishing)
        assert await before.submit(stopping) == handle
        assert await before.submit(dropped) == handle  # queued: two CPUs, two actors
        await probe.reached("finishing")
        await probe.reached("stopping")
        # the engine "restarts": a new executor, with only the handles the log recorded
        await after.start()
        assert (await after.executor.poll(finishing.key, handle)).phase == "running"
        assert (await after.executor.poll(stopping.key, handle)).phase == "running"
        assert (await after.executor.poll(TaskKey("exec-1", "other", 1), handle)).phase == "lost"
        probe.let_go("finishing")
        done = await after.wait(finishing.key, FINAL)
        assert output(done, contract_tasks.wait_for_go) == 1
        # an adopted sync attempt: its actor is killed (a sync body cannot be stopped otherwise)
        await after.executor.cancel(stopping.key, handle)
        await probe.gone("stopping")
        # one never polled since the restart, found by its handle: an async body is cancelled
        await probe.reached("dropped")  # it started on the actor "finishing" left free
        await after.executor.cancel(dropped.key, handle)
        await probe.reached("dropped:cancelled")
    finally:
        await after.executor.close()
        await before.executor.close()


async def test_idle_actors_are_stopped_after_the_idle_timeout() -> None:
    ensure_ray()
    executor = RayExecutor(idle_timeout=0.2)
    harness = Harness(executor)
    await harness.start()
    try:
        assert (await harness.run(request(contract_tasks.add, a=1, b=2))).phase == "succeeded"
        assert executor.pool_sizes() == {"cpu1": 1}

        for _ in range(600):  # the reaper's own timer decides; this only looks, for up to 30 s
            if not executor.pool_sizes():
                break
            await asyncio.sleep(0.05)
        assert executor.pool_sizes() == {}
        again = await harness.run(request(contract_tasks.add, "again", a=2, b=2))
        assert output(again, contract_tasks.add) == 4, "a fresh actor starts on demand"
    finally:
        await executor.close()


async def test_a_task_larger_than_the_cluster_is_refused_naming_its_resources() -> None:
    ensure_ray()
    harness = Harness(RayExecutor())
    await harness.start()
    try:
        req = request(contract_tasks.add, a=1, b=1)
        req = msgspec.structs.replace(req, resources=Resources(gpu=3))
        with pytest.raises(ConfigError, match=r"asks for cpu0-gpu3 but the Ray cluster has"):
            await harness.submit(req)
    finally:
        await harness.executor.close()


async def test_actors_of_an_engine_that_is_gone_exit_by_themselves() -> None:
    import ray

    ensure_ray()
    executor = RayExecutor(orphan_timeout=1.0)
    harness = Harness(executor)
    await harness.start()

    def names() -> list[str]:
        return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if executor.executor_id in a["name"]]

    try:
        assert (await harness.run(request(contract_tasks.add, a=1, b=2))).phase == "succeeded"
        assert len(names()) == 1
        assert executor._reaper is not None
        executor._reaper.cancel()  # the engine "crashed": nobody calls its actors any more
        for _ in range(600):  # the actor's own timer decides; this only looks, for up to 30 s
            if not names():
                break
            await asyncio.sleep(0.05)
        assert names() == []
    finally:
        await executor.close()
