"""Workflows for the progress view tests: a retry, a map, and a map that never ends."""

from __future__ import annotations

import asyncio

from engine import current_context, map_task, task, workflow


@task(retries=1)
def flaky_once(x: int) -> int:
    if current_context().attempt == 1:
        raise RuntimeError(f"first attempt of {x} fails")
    return x


@task
def bump(x: int) -> int:
    return x + 1


@task
def add_up(xs: list[int], base: int) -> int:
    return base + sum(xs)


@workflow
def retried_then_mapped(xs: list[int]) -> int:
    return add_up(xs=map_task(bump)(x=xs), base=flaky_once(x=1))


@task
async def hang(x: int) -> int:
    await asyncio.sleep(3600)
    return x


@workflow
def hanging_map(xs: list[int]) -> list[int]:
    return map_task(hang)(x=xs)
