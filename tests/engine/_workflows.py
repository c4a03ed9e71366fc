"""Workflows the engine tests run. Importable by module path, so any process can load the tasks.

Side effects go to files under ``$SLIPSTREAM_TEST_SIDE_EFFECTS`` (one line per completed run), so a
test (or a crash test in another process) can count how often each task really ran.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from pathlib import Path

from engine import current_context, dynamic, map_task, task, workflow


def record(name: str) -> None:
    """Append one line to the side-effect log of ``name``."""
    directory = os.environ.get("SLIPSTREAM_TEST_SIDE_EFFECTS")
    if directory:
        with open(Path(directory) / f"{name}.log", "a") as log:
            log.write(f"{current_context().execution_id} {current_context().attempt}\n")


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def double(x: int) -> int:
    return 2 * x


@workflow
def diamond(x: int = 3) -> int:
    a = add(a=x, b=1)
    return add(a=double(x=a), b=double(x=a))


@task
def square(x: int) -> int:
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@dynamic
def squares(n: int) -> int:
    return total(xs=[square(x=i) for i in range(n)])


@workflow
def foreach_join(n: int = 5) -> int:
    return squares(n=n)


@dynamic
def inner(k: int) -> int:
    return total(xs=[square(x=k), square(x=k + 1)])


@dynamic
def outer(n: int) -> int:
    return total(xs=[inner(k=k) for k in range(n)])


@workflow
def nested(n: int = 3) -> int:
    return outer(n=n)


@task
def picky(x: int, offset: int) -> int:
    if x == 3:
        raise ValueError(f"element {x} is bad")
    return x + offset


@workflow
def tolerant_map(xs: list[int]) -> list[int | None]:
    return map_task(functools.partial(picky, offset=100), min_success_ratio=0.8)(x=xs)


@workflow
def strict_map(xs: list[int]) -> list[int]:
    return map_task(functools.partial(picky, offset=100))(x=xs)


@task
def explode(x: int) -> int:
    raise RuntimeError("exploded on purpose")


@task
def slow_ok(x: int) -> int:
    time.sleep(0.3)
    record("slow_ok")
    return x


@workflow(failure_policy="fail_fast")
def fail_fast_wf(x: int = 1) -> int:
    bad = explode(x=x)
    slow_ok(x=x)
    return add(a=bad, b=1)


@workflow(failure_policy="finish_executable")
def finish_executable_wf(x: int = 1) -> int:
    bad = explode(x=x)
    ok = slow_ok(x=x)
    after_ok = double(x=ok)
    return add(a=bad, b=after_ok)


@task(retries=2)
def flaky(x: int) -> int:
    record("flaky")
    if current_context().attempt < 3:
        raise ConnectionError(f"attempt {current_context().attempt} fails")
    return x


@workflow
def retrying(x: int = 7) -> int:
    return flaky(x=x)


@task(retries=1)
def always_fails(x: int) -> int:
    record("always_fails")
    raise ValueError("nope")


@workflow
def retries_exhausted(x: int = 1) -> int:
    return always_fails(x=x)


@task(timeout=0.5, retries=1)
async def sleepy(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@workflow
def timing_out(seconds: float = 30.0) -> float:
    return sleepy(seconds=seconds)


@task
async def wait_forever(x: int) -> int:
    record("wait_forever_started")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        record("wait_forever_cancelled")
        raise
    return x


@workflow
def abortable(x: int = 1) -> int:
    return wait_forever(x=x)


# --- recovery and crash: counted side effects, failure controlled by a marker file ----------------


@task
def counted(x: int) -> int:
    record(f"counted_{x}")
    return x


@task
def gate(xs: list[int], marker: str) -> int:
    record("gate")
    if not Path(marker).exists():
        raise RuntimeError(f"marker {marker} is missing")
    return sum(xs)


@task
def element(x: int, marker: str) -> int:
    record(f"element_{x}")
    if x == 2 and not Path(marker).exists():
        time.sleep(0.3)  # fail last, so the other elements have finished and can be recovered
        raise RuntimeError("element 2 needs the marker")
    return x * 10


@dynamic
def fan(n: int, marker: str) -> int:
    firsts = [counted(x=i) for i in range(n)]
    return gate(xs=firsts, marker=marker)


@workflow(failure_policy="finish_executable")
def recoverable(n: int, marker: str) -> int:
    a = counted(x=100)
    d = fan(n=n, marker=marker)
    m = map_task(functools.partial(element, marker=marker))(x=[0, 1, 2, 3])
    return add(a=add(a=a, b=d), b=total(xs=m))


@task
def step(x: int) -> int:
    record(f"step_{x}")
    time.sleep(0.05)
    return x + 1


@dynamic
def chain(n: int) -> int:
    value = 0
    for _ in range(n):
        value = step(x=value)
    return value


@workflow
def crashable(n: int = 6) -> int:
    c = chain(n=n)
    m = map_task(step)(x=[10, 20, 30, 40])
    return add(a=c, b=total(xs=m))


@task
def kill_the_process(x: int) -> int:
    """Ends the whole process, as a segfault or an `os._exit` in a C extension would."""
    record("kill_the_process")
    os._exit(1)


@workflow
def process_killer(x: int = 1) -> int:
    return kill_the_process(x=x)


@task
async def kill_the_process_async(x: int) -> int:
    record("kill_the_process_async")
    os._exit(1)


@workflow
def process_killer_async(x: int = 1) -> int:
    return kill_the_process_async(x=x)


# --- maps run in chunks (test_maps): per-element side effects -------------------------------------


def record_element(name: str, what: str = "done") -> None:
    """Append ``<execution> <node> <attempt> <what>`` to the side-effect log of ``name``.

    The node is the element's (``<map>/<index>``), so a test can count runs per element.
    """
    directory = os.environ.get("SLIPSTREAM_TEST_SIDE_EFFECTS")
    if directory:
        ctx = current_context()
        with open(Path(directory) / f"{name}.log", "a") as log:
            log.write(f"{ctx.execution_id} {ctx.node_id} {ctx.attempt} {what}\n")


@workflow
def wide_map(xs: list[int]) -> list[int]:
    return map_task(double)(x=xs)


@task(retries=1)
def first_attempt_fails(x: int) -> int:
    record_element("first_attempt_fails")
    if x % 3 == 1 and current_context().attempt == 1:
        raise ConnectionError(f"element {x} fails its first attempt")
    return x + 1


@workflow
def retrying_map(xs: list[int]) -> list[int]:
    return map_task(first_attempt_fails)(x=xs)


@task
def dies_once(x: int, victim: int) -> int:
    """Element ``victim`` takes its worker process down on attempt 1."""
    record_element("dies_once", "started")
    if x == victim and current_context().attempt == 1:
        os._exit(1)
    return x * 3


@workflow
def dying_map(xs: list[int], victim: int) -> list[int]:
    return map_task(functools.partial(dies_once, victim=victim))(x=xs)


@task
def odd_fails(x: int) -> int:
    if x % 2 == 1:
        raise ValueError(f"odd element {x} is bad")
    return x


@workflow
def half_tolerant_map(xs: list[int]) -> list[int | None]:
    return map_task(odd_fails, min_success_ratio=0.5)(x=xs)


@workflow
def too_few_succeed_map(xs: list[int]) -> list[int | None]:
    return map_task(odd_fails, min_success_ratio=0.7)(x=xs)


@task
def busy(x: int) -> int:
    record_element("busy", "start")
    time.sleep(0.03)
    record_element("busy", "end")
    return x


@task
async def busy_async(x: int) -> int:
    record_element("busy", "start")
    await asyncio.sleep(0.03)
    record_element("busy", "end")
    return x


@workflow
def bounded_map(xs: list[int]) -> list[int]:
    return map_task(busy, concurrency=3)(x=xs)


@workflow
def bounded_async_map(xs: list[int]) -> list[int]:
    return map_task(busy_async, concurrency=3)(x=xs)


@task
async def hang_element(x: int) -> int:
    record_element("hang", "started")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        record_element("hang", "cancelled")
        raise
    record_element("hang", "woke")
    return x


@workflow
def hanging_map(xs: list[int]) -> list[int]:
    return map_task(hang_element, concurrency=4)(x=xs)


@task
def fixable(x: int, marker: str) -> int:
    record_element("fixable")
    if x in (1, 5) and not Path(marker).exists():
        raise RuntimeError(f"element {x} needs the marker")
    return x * 10


@workflow
def fixable_map(xs: list[int], marker: str) -> list[int | None]:
    # one element at a time, in index order, and the map fails only at its second failure (5 of 6
    # must succeed): every element has finished when element 5 fails the map
    return map_task(functools.partial(fixable, marker=marker), concurrency=1, min_success_ratio=0.7)(x=xs)


@task
def span(n: int) -> list[int]:
    return list(range(n))


@task
def slow_element(x: int) -> int:
    time.sleep(0.05)
    record_element("slow_element")
    return x + 1


@workflow
def crash_map(n: int = 40) -> list[int]:
    return map_task(slow_element, concurrency=4)(x=span(n=n))


@task
def big_text(n: int) -> str:
    return "x" * n


@task
def text_length(text: str) -> int:
    return len(text)


@task
def echo_list(xs: list[int]) -> list[int]:
    return xs


@task
async def plus_one(x: int) -> int:
    return x + 1


@workflow
def large_values(n: int, xs: list[int]) -> tuple[int, list[int], list[int]]:
    text = big_text(n=n)
    ys = map_task(plus_one)(x=xs)
    return text_length(text=text), echo_list(xs=ys), ys
