"""Workflows of the fault suite. Importable by module path, so engine processes of their own (the
kill tests' runner, process workers, Ray actors) load the same tasks."""

from __future__ import annotations

import ctypes
import os
import resource
import time

from engine import current_context, dynamic, map_task, task, workflow

# --- a mixed workflow: a dynamic chain, a map whose elements fail once and are retried, and a cached
# task called twice (the second call hits the cache the first filled) ------------------------------


@task
def step(x: int) -> int:
    time.sleep(0.03)
    return x + 1


@dynamic
def chain(n: int) -> int:
    value = 0
    for _ in range(n):
        value = step(x=value)
    return value


@task
def span(n: int) -> list[int]:
    return list(range(n))


@task(retries=2)
def flaky(x: int) -> int:
    """Every third element fails its first attempt (a user error, retried)."""
    if x % 3 == 0 and current_context().attempt == 1:
        raise RuntimeError(f"element {x}: the first attempt fails")
    time.sleep(0.03)
    return x + 1


@task(cache=True, cache_version="1", cache_ignore_inputs=["after"])
def cached_square(x: int, after: int = 0) -> int:
    """``after`` only orders the calls: it is not part of the cache key."""
    time.sleep(0.05)
    return x * x


@task
def combine(chained: int, mapped: list[int], first: int, second: int) -> int:
    return chained + sum(mapped) + first + second


@workflow
def mixed(n: int = 4) -> int:
    chained = chain(n=n)
    mapped = map_task(flaky, concurrency=3)(x=span(n=8))
    first = cached_square(x=n)
    second = cached_square(x=n, after=first)
    return combine(chained=chained, mapped=mapped, first=first, second=second)


def mixed_result(n: int = 4) -> int:
    return n + sum(x + 1 for x in range(8)) + 2 * n * n


# --- tasks that take their process down ------------------------------------------------------------


@task
def exhaust_memory(mib: int) -> int:
    """Caps this process's address space a little above what it uses now, then asks for ``mib``
    MiB more: the allocation fails as it does under a container's memory limit (the cap is lifted
    again afterwards, so the process worker stays usable)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        in_use = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + 64 * 2**20, hard))
    try:
        block = bytearray(mib * 2**20)
        return len(block)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@workflow
def out_of_memory(mib: int = 512) -> int:
    return exhaust_memory(mib=mib)


@task
def segfault(x: int) -> int:
    """Reads address 0: SIGSEGV in C code, the whole process dies."""
    return len(ctypes.string_at(0))


@workflow
def segfaulting(x: int = 1) -> int:
    return segfault(x=x)


@task
def exit_at_once(x: int) -> int:
    """``os._exit``: the process ends without unwinding, as a C extension's exit() would."""
    os._exit(3)


@workflow
def exiting(x: int = 1) -> int:
    return exit_at_once(x=x)
