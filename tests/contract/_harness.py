"""Drives an `Executor` the way the control loop does, for the contract suite and backend tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from engine import from_literal, to_literal
from engine.interfaces import Executor, TaskKey, TaskRequest, TaskStatus
from tests.contract._probe import WAIT

FINAL = ("succeeded", "failed")


class Harness:
    """An executor plus the ``report`` calls it made (a stand-in for the control loop)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.reports: list[TaskKey] = []
        self._started_on_submit: set[TaskKey] = set()
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.executor.start(self.report)

    def report(self, key: TaskKey) -> None:
        """The callback given to the executor; any thread may call it."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._note, key)

    def _note(self, key: TaskKey) -> None:
        self.reports.append(key)
        self._changed.set()

    async def submit(self, request: TaskRequest, *, release: bool = True) -> str:
        """Submit; like the loop, release at once an attempt that starts on submit."""
        handle = await self.executor.submit(request)
        if self.executor.starts_on_submit(request) and request.key not in self._started_on_submit:
            # the loop records this start in the submitting round, so the executor reports none:
            # count it here, once, as the loop knows it
            self._started_on_submit.add(request.key)
            self._note(request.key)
            if release:
                self.executor.release(request.key)
        return handle

    async def wait(self, key: TaskKey, phases: Iterable[str]) -> TaskStatus:
        """Poll at each report until the attempt is in one of ``phases``."""
        wanted = tuple(phases)

        async def until() -> TaskStatus:
            while True:
                self._changed.clear()  # before polling: a report that comes meanwhile wakes us
                status = await self.executor.poll(key)
                if status.phase in wanted:
                    return status
                await self._changed.wait()

        return await asyncio.wait_for(until(), WAIT)

    async def run(self, request: TaskRequest) -> TaskStatus:
        """Submit, release once running (as the loop does after recording it), wait for the end."""
        await self.submit(request)
        status = await self.wait(request.key, ("running", *FINAL))
        if status.phase == "running":
            self.executor.release(request.key)
            status = await self.wait(request.key, FINAL)
        return status


def request(task: Any, node: str = "n", attempt: int = 1, *, kind: str = "task", **inputs: Any) -> TaskRequest:
    """A request for one attempt of ``task`` in execution ``exec-1``."""
    literals = {name: to_literal(value, task.interface.inputs[name].type) for name, value in inputs.items()}
    return TaskRequest(key=TaskKey("exec-1", node, attempt), task=task.ref, inputs=literals, kind=kind)  # type: ignore[arg-type]


def output(status: TaskStatus, task: Any, name: str = "o0") -> Any:
    """The decoded output ``name`` of a succeeded attempt."""
    assert status.phase == "succeeded", status
    return from_literal(status.outputs[name], dict(task.interface.outputs)[name])
