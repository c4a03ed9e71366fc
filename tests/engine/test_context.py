"""TaskContext and current_context() outside executors (executor binding: tests/plugins)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine._context import NoTaskContext, TaskContext, bind_context, current_context, read_secrets
from engine.errors import SlipstreamError


def make(node: str = "train", attempt: int = 1) -> TaskContext:
    return TaskContext(execution_id="e1", node_id=node, attempt=attempt, secrets={"TOKEN": "hunter2"})


def test_outside_a_task_raises() -> None:
    with pytest.raises(NoTaskContext, match=r"current_context\(\) called outside a running task"):
        current_context()
    assert issubclass(NoTaskContext, SlipstreamError) and issubclass(NoTaskContext, LookupError)


def test_bind_sets_and_restores() -> None:
    outer, inner = make("a"), make("b")
    with bind_context(outer):
        assert current_context() is outer
        with bind_context(inner):
            assert current_context() is inner
        assert current_context() is outer
    with pytest.raises(NoTaskContext):
        current_context()


async def test_concurrent_asyncio_tasks_see_their_own_context() -> None:
    async def run(node: str) -> str:
        with bind_context(make(node)):
            await asyncio.sleep(0)
            return current_context().node_id

    assert await asyncio.gather(*(run(f"n{i}") for i in range(5))) == [f"n{i}" for i in range(5)]


def test_logger_carries_ids(caplog: pytest.LogCaptureFixture) -> None:
    ctx = make("prune/train-2", attempt=3)
    with caplog.at_level(logging.INFO, logger="slipstream.task"):
        ctx.logger.info("hello")
    (record,) = caplog.records
    assert record.name == "slipstream.task.prune/train-2"
    assert (record.execution_id, record.node_id, record.attempt) == ("e1", "prune/train-2", 3)  # type: ignore[attr-defined]


def test_repr_hides_secret_values() -> None:
    text = repr(make())
    assert "TOKEN" in text and "hunter2" not in text


def test_read_secrets_skips_missing() -> None:
    assert read_secrets(["A", "MISSING"], {"A": "1", "B": "2"}) == {"A": "1"}
