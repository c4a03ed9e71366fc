"""Tasks for the LocalExecutor tests; a real module, so that process workers can import it.

The generic tasks of every executor are in tests/contract/_tasks.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from engine import task
from tests.contract._probe import hold, tell

# Set by `sleep_forever` when its body runs (thread mode: the same process as the test).
STARTED = threading.Event()


@task
async def block_loop(seconds: float) -> int:
    time.sleep(seconds)  # noqa: ASYNC251 - the bug the watchdog reports: blocking code in an async task
    return 1


@task
async def well_behaved(x: int) -> int:
    await asyncio.sleep(0)
    return x


@task
def sleep_forever(x: int) -> int:
    STARTED.set()
    time.sleep(3600)  # far past any timeout: only cancel (or the process ending) stops waiting for it
    return x


@task
def pid() -> int:
    return os.getpid()


@task
def hold_and_tell_pid(probe: str, name: str) -> int:
    tell(probe, f"{name}:pid={os.getpid()}")
    hold(probe, name)
    return os.getpid()


@task
def segfault() -> int:
    import ctypes

    return len(ctypes.string_at(0))  # reads address 0: the worker process dies of SIGSEGV
