"""Tasks of the Ray executor tests; a real module, so that Ray's worker processes import it.

They report to the test through the probe of the executor contract suite (tests/contract/_probe.py).
"""

from __future__ import annotations

import os

from engine import Resources, current_context, map_task, task, workflow
from tests.contract._probe import hold


def _where() -> list[str]:
    return [str(os.getpid()), *current_context().gpu_ids]


@task(resources=Resources(gpu=1))
def on_gpu(probe: str, name: str) -> list[str]:
    hold(probe, f"{name}@{','.join(current_context().gpu_ids)}")
    return _where()


@task(resources=Resources(gpu=0.5))
def on_half_gpu(probe: str, name: str) -> list[str]:
    hold(probe, f"{name}@{','.join(current_context().gpu_ids)}")
    return _where()


@task(resources=Resources(gpu=1), retries=0)
def held_once(probe: str) -> list[str]:
    """Holds at its first attempt (where the test kills its actor); later attempts return at once."""
    if current_context().attempt == 1:
        hold(probe, f"held@{os.getpid()}")
    return _where()


@task(resources=Resources(gpu=1))
def gpu_where() -> list[str]:
    return _where()


@task
def collect(xs: list[list[str]]) -> list[list[str]]:
    return xs


@workflow
def four_on_gpus(probe: str) -> list[list[str]]:
    return collect(xs=[on_gpu(probe=probe, name=f"t{i}") for i in range(4)])


@workflow
def six_on_half_gpus(probe: str) -> list[list[str]]:
    return collect(xs=[on_half_gpu(probe=probe, name=f"h{i}") for i in range(6)])


@workflow
def killed_once(probe: str) -> list[str]:
    return held_once(probe=probe)


@workflow
def where_on_gpu() -> list[str]:
    return gpu_where()


@task
def plus_one(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative {x}")
    return x + 1


@workflow
def mapped(xs: list[int]) -> list[int | None]:
    return map_task(plus_one, min_success_ratio=0.5)(x=xs)
