"""Tasks for the local executor tests; a real module so that process workers can import it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from engine._context import current_context
from engine._task import dynamic, task

# Side effects the tests observe (thread mode only: process workers have their own copies).
CALLS: dict[str, int] = {}
STARTED = threading.Event()
RELEASE = threading.Event()
ASYNC_EVENTS: list[str] = []


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def count_calls(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


@task
def boom(x: int) -> int:
    raise ValueError(f"bad x {x}")  # the raising line the traceback must show


@task
def wrong_output(x: int) -> int:
    result: Any = f"not an int: {x}"
    return result


@task
def context_ids() -> list[str]:
    ctx = current_context()
    ctx.logger.info("running")
    return [ctx.execution_id, ctx.node_id, str(ctx.attempt), ctx.project, ctx.domain, ",".join(sorted(ctx.secrets))]


@task
def blocking(x: int) -> int:
    STARTED.set()
    RELEASE.wait(10)
    return x


@task
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@task
async def async_context() -> str:
    await asyncio.sleep(0)
    ctx = current_context()
    return f"{ctx.execution_id}/{ctx.node_id}/{ctx.attempt}"


@task
async def async_forever(x: int) -> int:
    ASYNC_EVENTS.append("started")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        ASYNC_EVENTS.append("cancelled")
        raise
    return x


@task
async def async_boom(x: int) -> int:
    await asyncio.sleep(0)
    raise RuntimeError(f"async bad {x}")


@task
def die(x: int) -> int:
    import os

    os._exit(3)  # the process worker dies mid-task


@dynamic
def fan_out(n: int) -> list[int]:
    return [add(a=i, b=1) for i in range(n)]
