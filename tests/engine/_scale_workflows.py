"""Workflows the server-scale tests run in their serve processes (importable from the repo root)."""

from __future__ import annotations

import asyncio

from engine import task, workflow


@task
async def step(x: int) -> int:
    await asyncio.sleep(0.05)
    return x + 1


@workflow
def three_steps(x: int = 0) -> int:
    """Three sequential short steps: long enough to be mid-run when a server is killed."""
    return step(x=step(x=step(x=x)))


@task
async def slow_step(x: int) -> int:
    await asyncio.sleep(0.3)
    return x + 1


@workflow
def ten_slow_steps(x: int = 0) -> int:
    """Ten sequential steps of 0.3 s: still running a few seconds after a server is stopped."""
    value = slow_step(x=x)
    for _ in range(9):
        value = slow_step(x=value)
    return value
