"""A scoped engine's subscription on the event stream (NATS JetStream, the relay's subjects) asks
the server for its project's subjects only, ``slipstream.events.<project>.<domain>.<execution>``:
another project's events never reach it, and subscribing to another project is refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from engine import Engine, InvalidScope
from engine._subscribe import Delivery
from tests.engine import _workflows as wf


async def _until_ended(subscription: object, execution_id: str) -> list[Delivery]:
    got: list[Delivery] = []
    with anyio.fail_after(60):
        async for delivery in subscription:  # type: ignore[attr-defined]
            got.append(delivery)
            if delivery.event.execution_id == execution_id and type(delivery.event).__name__ == "ExecutionSucceeded":
                return got
    raise AssertionError("the subscription ended")


async def test_a_scoped_engine_subscribes_only_to_its_project(
    postgres_database: str, nats_url: str, tmp_path: Path
) -> None:
    mine, theirs = f"a{uuid.uuid4().hex[:10]}", f"b{uuid.uuid4().hex[:10]}"  # the stream is shared
    blobs = tmp_path / "blobs"
    async with Engine.connect(postgres_database, nats=nats_url, executor="local", blobs=blobs) as server:
        ids = {}
        for project in (theirs, mine):  # theirs first: a leaky filter would hand them out first
            handle = await server.launch(wf.diamond, project=project, x=1)
            await handle.wait(timeout=60)
            ids[project] = handle.execution_id
        async with Engine.connect(
            postgres_database, nats=nats_url, executor="local", blobs=blobs, run_loop=False, project=mine
        ) as scoped:
            with pytest.raises(InvalidScope, match=f"scoped to project '{mine}'"):
                scoped.subscribe(project=theirs)
            subscription = scoped.subscribe(from_start=True)
            source = subscription._source
            assert type(source).__name__ == "NatsEventSource"
            assert source.subject == f"slipstream.events.{mine}.*.*"  # type: ignore[attr-defined]
            async with subscription:
                got = await _until_ended(subscription, ids[mine])
            assert {d.event.execution_id for d in got} == {ids[mine]}
            domain_scoped = Engine.connect(
                postgres_database, nats=nats_url, executor="local", project=mine, domain="production"
            ).subscribe()
            assert domain_scoped._source.subject == f"slipstream.events.{mine}.production.*"  # type: ignore[attr-defined]
