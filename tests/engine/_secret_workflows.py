"""A task that does everything a careless task does with a secret, except return it."""

from __future__ import annotations

import sys

from engine import current_context, map_task, task, workflow


@task(secrets=["SLIPSTREAM_TEST_CANARY"], retries=1)
def careless(x: int) -> int:
    token = current_context().secrets["SLIPSTREAM_TEST_CANARY"]
    print(f"using token {token}")
    print(f"stderr too: {token}", file=sys.stderr)
    current_context().logger.warning("logged token %s", token)
    if current_context().attempt == 1:
        raise RuntimeError(f"bad token {token}")
    return x


@task(secrets=["SLIPSTREAM_TEST_CANARY"])
def always_fails(x: int) -> int:
    raise ValueError(f"token {current_context().secrets['SLIPSTREAM_TEST_CANARY']} refused for {x}")


@workflow
def leaky(x: int = 1) -> int:
    return careless(x=x)


@workflow
def leaky_map(xs: list[int]) -> list[int]:
    return map_task(careless)(x=xs)


@workflow
def leaky_failure(x: int = 1) -> int:
    return always_fails(x=x)
