"""Workflows ``python -m benchmarks server`` runs in its serve processes (importable by them)."""

from __future__ import annotations

import asyncio
import os

from engine import task, workflow

NAPS = 20
NAP_S = 0.1
HOLD_S = 3600.0


@task
async def one(x: int) -> int:
    """The serving process's id: which server ran it."""
    return os.getpid()


@workflow
def one_task(x: int = 0) -> int:
    return one(x=x)


@task
async def nap(x: int) -> int:
    await asyncio.sleep(NAP_S)
    return x + 1


@workflow
def naps(x: int = 0) -> int:
    """`NAPS` sequential naps of `NAP_S` seconds: an execution that is always mid-run."""
    value = nap(x=x)
    for _ in range(NAPS - 1):
        value = nap(x=value)
    return value


@task
async def hold(x: int) -> int:
    await asyncio.sleep(HOLD_S)
    return x


@workflow
def held(x: int = 0) -> int:
    """One task that runs for `HOLD_S` seconds: an execution a sweep finds running."""
    return hold(x=x)
