"""``python -m benchmarks ray``: the Ray executor against raw Ray, in one run on one Ray instance.

``python -m benchmarks ray [--elements 10000] [--repeat 3] [--gpu-repeat 3]``

Two figures, each a ratio against a baseline measured in the same run:

- **map**: ``map_sum_sync`` (`benchmarks._engine_workflows`: a map of ``--elements`` sync no-op
  elements, then a sum) through `Engine.embedded` on the ``ray`` executor, from ``launch`` to
  ``outputs`` (a 100-element map first warms the actors), against the same number of calls of
  the same function on a raw pool of Ray actors of the same size (the number of actors the engine's
  pool held), all submitted at once and awaited. ``engine_over_raw`` is the engine's wall time over
  the raw pool's (target <= 1.0: the engine sends chunks, one actor call per chunk).
- **gpu start**: a ``Resources(gpu=1)`` no-op task on a fresh `RayExecutor` (its actor starts:
  cold) and then again on the same executor (its actor is warm), from ``submit`` to the final
  status. ``cold_over_warm`` is the median cold time over the median warm one (target >= 10).
  Without GPU hardware Ray is started with two logical GPUs (``gpus: "logical"``).

Figures are medians over ``--repeat`` runs, the engine and raw runs interleaved (the machine is
shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

TARGETS = {"engine_over_raw": 1.0, "cold_over_warm": 10.0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ray", description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=10_000, help="map elements")
    parser.add_argument("--repeat", type=int, default=3, help="map runs (engine and raw, interleaved)")
    parser.add_argument("--gpu-repeat", type=int, default=3, help="cold/warm GPU task starts")
    return parser.parse_args(argv)


class RawWorker:
    """The raw baseline's actor: one method that calls the no-op element's function."""

    def noop(self, x: int) -> int:
        from benchmarks._engine_workflows import sync_element

        return sync_element.fn(x=x)  # type: ignore[no-any-return]


async def raw_map(actors: list[Any], elements: int) -> float:
    """Seconds to run ``elements`` calls round-robin on ``actors``, all submitted, then awaited."""
    started = time.perf_counter()
    refs = [actors[i % len(actors)].noop.remote(i) for i in range(elements)]
    results = await asyncio.gather(*refs)
    assert sum(results) == elements * (elements - 1) // 2
    return time.perf_counter() - started


async def engine_map(engine: Any, elements: int) -> float:
    from benchmarks._engine_workflows import map_sum_sync

    started = time.perf_counter()
    handle = await engine.launch(map_sum_sync, xs=list(range(elements)))
    result = await handle.outputs(timeout=900)
    assert result == elements * (elements - 1) // 2
    return time.perf_counter() - started


async def map_figures(elements: int, repeat: int) -> dict[str, Any]:
    import ray

    from engine import Engine
    from plugins.ray import RayExecutor

    executor = RayExecutor()
    with tempfile.TemporaryDirectory(prefix="slipstream-bench-ray-") as state_dir:
        async with Engine.embedded(state_dir, executors=[executor], executor="ray") as engine:
            await engine_map(engine, 100)  # warm-up: the pool grows to its size
            engine_s: list[float] = []
            raw_s: list[float] = []
            pool = executor.pool_sizes()
            size = max(pool.values())
            # the raw actors reserve no CPU: the engine's idle actors hold the CPUs meanwhile
            raw = [ray.remote(RawWorker).options(num_cpus=0).remote() for _ in range(size)]
            await asyncio.gather(*(actor.noop.remote(0) for actor in raw))  # up and warm
            for _ in range(repeat):
                engine_s.append(await engine_map(engine, elements))
                raw_s.append(await raw_map(raw, elements))
            for actor in raw:
                ray.kill(actor)
    engine_median, raw_median = statistics.median(engine_s), statistics.median(raw_s)
    return {
        "elements": elements,
        "actors": size,
        "engine_s": [round(s, 3) for s in engine_s],
        "raw_s": [round(s, 3) for s in raw_s],
        "engine_calls_per_s": round(elements / engine_median, 1),
        "raw_calls_per_s": round(elements / raw_median, 1),
        "engine_over_raw": round(engine_median / raw_median, 3),
    }


async def _gpu_task(executor: Any, done: asyncio.Event, key: Any) -> tuple[float, Any]:
    """Seconds from ``submit`` to the final status of a ``Resources(gpu=1)`` no-op; the status."""
    from benchmarks._engine_workflows import sync_element
    from engine import Resources, to_literal
    from engine.interfaces import TaskRequest

    request = TaskRequest(key=key, task=sync_element.ref, inputs={"x": to_literal(1, int)}, resources=Resources(gpu=1))
    started = time.perf_counter()
    await executor.submit(request)
    while True:
        done.clear()
        status = await executor.poll(key)
        if status.phase in ("succeeded", "failed"):
            assert status.phase == "succeeded", status
            executor.forget(key)
            return time.perf_counter() - started, status
        await done.wait()


async def gpu_figures(repeat: int) -> dict[str, Any]:
    from engine.interfaces import TaskKey, TaskStatus
    from plugins.ray import RayExecutor

    cold: list[float] = []
    warm: list[float] = []
    status: TaskStatus | None = None
    for run in range(repeat):
        done = asyncio.Event()
        executor = RayExecutor()
        await executor.start(lambda key, done=done: done.set())
        try:
            seconds, status = await _gpu_task(executor, done, TaskKey(f"bench-{run}", "cold", 1))
            cold.append(seconds)
            for i in range(5):
                seconds, status = await _gpu_task(executor, done, TaskKey(f"bench-{run}", f"warm-{i}", 1))
                warm.append(seconds)
        finally:
            await executor.close()
    cold_median, warm_median = statistics.median(cold), statistics.median(warm)
    return {
        "cold_ms": [round(s * 1000, 2) for s in cold],
        "warm_ms_median": round(warm_median * 1000, 3),
        "cold_ms_median": round(cold_median * 1000, 2),
        "cold_over_warm": round(cold_median / warm_median, 1),
        "gpu_ids": list(status.gpu_ids) if status else [],
    }


async def main(argv: list[str]) -> dict[str, Any]:
    import ray

    args = parse_args(argv)
    started = datetime.now(UTC)
    owns = not ray.is_initialized()  # a Ray this process already runs is used as it is
    gpus = "as initialised by the caller"
    if owns:
        ray.init(include_dashboard=False, log_to_driver=False)
        gpus = "hardware"
        if not ray.cluster_resources().get("GPU"):
            ray.shutdown()
            ray.init(include_dashboard=False, log_to_driver=False, num_gpus=2)
            gpus = "logical"
    try:
        resources = {name: ray.cluster_resources().get(name, 0) for name in ("CPU", "GPU")}
        mapped = await map_figures(args.elements, args.repeat)
        gpu = await gpu_figures(args.gpu_repeat)
    finally:
        if owns:
            ray.shutdown()
    return {
        "command": " ".join(["python -m benchmarks ray", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "ray": ray.__version__,
        "cluster": resources,
        "gpus": gpus,
        "map": mapped,
        "gpu_start": gpu,
        "targets": TARGETS,
        "met": {
            "engine_over_raw": mapped["engine_over_raw"] <= TARGETS["engine_over_raw"],
            "cold_over_warm": gpu["cold_over_warm"] >= TARGETS["cold_over_warm"],
        },
    }
