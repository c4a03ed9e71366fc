"""Slipstream's side of ``python -m benchmarks peers``: the same workloads as `_peer_workflows_flyte`.

W1: a map of sync no-op tasks, then a sum. W2: a chain of `CHAIN_LENGTH` no-op tasks. W3: a whole
``python -c`` process that defines one task and one workflow and runs it (`W3_LOCAL`: calling the
workflow, which runs an ephemeral embedded engine; `W3_EMBEDDED`: through ``Engine.embedded``).
"""

from __future__ import annotations

from engine import map_task, task, workflow

CHAIN_LENGTH = 50


@task
def noop(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@workflow
def w1(xs: list[int]) -> int:
    return total(xs=map_task(noop)(x=xs))


@workflow
def w2(x: int = 0) -> int:
    value = noop(x=x)
    for _ in range(CHAIN_LENGTH - 1):
        value = noop(x=value)
    return value


W3_LOCAL = """\
from engine import task, workflow


@task
def hello(x: int) -> int:
    return x + 1


@workflow
def wf(x: int = 1) -> int:
    return hello(x=x)


print(wf(x=1))
"""

W3_EMBEDDED = """\
import asyncio
import tempfile

from engine import Engine, task, workflow


@task
def hello(x: int) -> int:
    return x + 1


@workflow
def wf(x: int = 1) -> int:
    return hello(x=x)


async def main():
    with tempfile.TemporaryDirectory() as state_dir:
        async with Engine.embedded(state_dir=state_dir) as engine:
            handle = await engine.launch(wf, x=1)
            print(await handle.outputs())


asyncio.run(main())
"""
