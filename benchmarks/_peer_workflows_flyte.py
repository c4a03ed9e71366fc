"""flytekit's side of ``python -m benchmarks peers``: the workloads of `_peer_workflows`, in flytekit.

Imported only by a measuring process when flytekit is installed (the optional ``peers`` extra);
calling a flytekit ``@workflow`` runs it in flytekit's local mode, which records nothing.
"""

from __future__ import annotations

import typing

from flytekit import map_task, task, workflow

CHAIN_LENGTH = 50


@task
def noop(x: int) -> int:
    return x + 1


@task
def total(xs: typing.List[int]) -> int:  # noqa: UP006 - flytekit's documented spelling
    return sum(xs)


@workflow
def w1(xs: typing.List[int]) -> int:  # noqa: UP006
    return total(xs=map_task(noop)(x=xs))


@workflow
def w2(x: int = 0) -> int:
    value = noop(x=x)
    for _ in range(CHAIN_LENGTH - 1):
        value = noop(x=value)
    return value


W3 = """\
from flytekit import task, workflow


@task
def hello(x: int) -> int:
    return x + 1


@workflow
def wf(x: int = 1) -> int:
    return hello(x=x)


print(wf(x=1))
"""
