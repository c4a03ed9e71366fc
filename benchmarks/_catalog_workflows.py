"""Workflows of ``python -m benchmarks catalog``: a wide map of a cached no-op task."""

from __future__ import annotations

from engine import map_task, task, workflow


@task(cache=True, cache_version="1")
async def cached_element(x: int) -> int:
    return x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@workflow
def cached_map(xs: list[int]) -> int:
    return total(xs=map_task(cached_element)(x=xs))
