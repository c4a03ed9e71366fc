"""Workflows the engine benchmark runs: no-op tasks, so what is measured is the engine."""

from __future__ import annotations

from engine import map_task, task, workflow

CHAIN_LENGTH = 100


@task
async def noop(x: int) -> int:
    return x + 1


@workflow
def chain(x: int = 0) -> int:
    value = noop(x=x)
    for _ in range(CHAIN_LENGTH - 1):
        value = noop(x=value)
    return value


@task
async def element(x: int) -> int:
    return x


@task
def count(xs: list[int]) -> int:
    return len(xs)


@workflow
def wide_map(xs: list[int]) -> int:
    results = map_task(element)(x=xs)
    return count(xs=results)


# --- ``python -m benchmarks map``: a map of no-op elements, then a sum -------------------------------


@task
def sync_element(x: int) -> int:
    return x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@workflow
def map_sum(xs: list[int]) -> int:
    """Async no-op elements (gathered on the event loop), then a sum."""
    return total(xs=map_task(element)(x=xs))


@workflow
def map_sum_sync(xs: list[int]) -> int:
    """Sync no-op elements (the local executor's threads), then a sum."""
    return total(xs=map_task(sync_element)(x=xs))
