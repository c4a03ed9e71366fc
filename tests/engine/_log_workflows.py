"""Tasks that print and log, for the log-capture tests."""

from __future__ import annotations

import sys
import threading
import time

from engine import current_context, map_task, task, workflow

# Both `chatty` tasks must run at the same time: each waits here for the other.
together = threading.Barrier(2, timeout=20)


@task
def chatty(name: str, lines: int) -> int:
    together.wait()
    for i in range(lines):
        print(f"{name} line {i}")
        time.sleep(0.001)
    print(f"{name} to stderr", file=sys.stderr)
    current_context().logger.info("%s logged", name)
    return lines


@workflow
def two_chatty(lines: int = 50) -> tuple[int, int]:
    return chatty(name="left", lines=lines), chatty(name="right", lines=lines)


@task(retries=1)
def noisy_then_fails(x: int) -> int:
    attempt = current_context().attempt
    print(f"attempt {attempt} starts")
    if attempt == 1:
        raise RuntimeError("first attempt fails")
    return x


@workflow
def retried(x: int = 1) -> int:
    return noisy_then_fails(x=x)


@task
def shout(x: int) -> int:
    print(f"element {x}")
    return x


@workflow
def shouting_map(xs: list[int]) -> list[int]:
    return map_task(shout)(x=xs)


@task
def flood(characters: int) -> int:
    sys.stdout.write("a" * (characters // 2) + "\n")
    sys.stdout.write("b" * (characters // 2) + "\nthe end\n")
    return characters


@workflow
def flooding(characters: int) -> int:
    return flood(characters=characters)


@task
async def waits_for_file(path: str) -> str:
    import anyio

    print("waiting for the file")
    while not await anyio.Path(path).exists():  # noqa: ASYNC110 (another process writes it)
        await anyio.sleep(0.05)
    print("got it")
    return await anyio.Path(path).read_text()


@workflow
def waiting(path: str) -> str:
    return waits_for_file(path=path)


@task
def broken(x: int) -> int:
    raise ValueError(f"bad value {x}")


@workflow
def failing(x: int = 3) -> int:
    return broken(x=x)
