"""Tasks of the executor contract suite; a real module, so that worker processes import it.

Tasks report to the test through the probe at address ``probe`` (tests/contract/_probe.py), which
works from any thread or process.
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

from engine import current_context, dynamic, task
from tests.contract._probe import hold, hold_async, tell, tell_async


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task
def touch(probe: str, name: str) -> int:
    tell(probe, name)
    return 1


@task
async def async_touch(probe: str, name: str) -> int:
    await tell_async(probe, name)
    return 1


@task
def wait_for_go(probe: str, name: str) -> int:
    hold(probe, name)
    return 1


@task
async def async_wait_for_go(probe: str, name: str) -> int:
    try:
        await hold_async(probe, name)
    except asyncio.CancelledError:
        await tell_async(probe, f"{name}:cancelled")
        raise
    return 1


@task
def boom(x: int) -> int:
    raise ValueError(f"bad x {x}")  # the raising line the traceback must show


@task
async def async_boom(x: int) -> int:
    await asyncio.sleep(0)
    raise ValueError(f"bad x {x}")  # the raising line the traceback must show


@task
def wrong_output(x: int) -> int:
    return cast(int, f"not an int: {x}")  # the declared type is a lie: the output cannot encode


@task
def die(x: int) -> int:
    os._exit(1)  # the worker dies mid-task


@task
def context_ids() -> list[str]:
    ctx = current_context()
    ctx.logger.info("running")
    secrets = [f"{name}={value}" for name, value in sorted(ctx.secrets.items())]
    return [ctx.execution_id, ctx.node_id, str(ctx.attempt), ctx.project, ctx.domain, *secrets]


@task
async def async_context_ids() -> list[str]:
    await asyncio.sleep(0)
    ctx = current_context()
    secrets = [f"{name}={value}" for name, value in sorted(ctx.secrets.items())]
    return [ctx.execution_id, ctx.node_id, str(ctx.attempt), ctx.project, ctx.domain, *secrets]


@dynamic
def fan_out(n: int) -> list[int]:
    return [add(a=i, b=1) for i in range(n)]
