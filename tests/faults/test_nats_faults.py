"""NATS down for 10 s while executions run, on a server of the test's own (the machine's NATS is
never touched): executions go on (the log in Postgres is the source of truth), the relay retries,
and once NATS is back the stream holds every committed event once per Msg-Id."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from engine import Engine, ExecutionHandle
from tests.plugins._stream import OwnNats, log_of, read_stream, wait_for_stream

from . import _workflows as wf
from ._checks import Audit, audit_log, audit_stream
from .conftest import FaultSummary

OUTAGE = 10.0
STREAM, PREFIX = "SLIPSTREAM", "slipstream.events"  # the relay's defaults (Engine.connect(nats=...))


@pytest.mark.timeout(150)
async def test_nats_down_for_10_seconds_during_a_run(
    postgres_database: str, own_nats: OwnNats, fault_summary: FaultSummary, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="slipstream.nats")
    handles: list[ExecutionHandle] = []
    health: list[str] = []
    async with Engine.connect(postgres=postgres_database, nats=own_nats.url, executor="local", retry_delay=0.05) as eng:

        async def launch_for(seconds: float) -> None:
            # a launch every 250 ms before, during and after the outage
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                handles.append(await eng.launch(wf.mixed, n=4))
                await anyio.sleep(0.25)

        async with anyio.create_task_group() as group:
            group.start_soon(launch_for, OUTAGE + 4)
            await anyio.sleep(2)
            await anyio.to_thread.run_sync(own_nats.stop)
            with anyio.fail_after(OUTAGE):  # the relay notices (acks missing, connection lost)
                while eng.health()["nats-relay"].ok:  # noqa: ASYNC110 - health is polled
                    await anyio.sleep(0.05)
            health.append(eng.health()["nats-relay"].detail)
            await anyio.sleep(OUTAGE - 0.5)
            launched_while_down = len(handles)
            await anyio.to_thread.run_sync(own_nats.start)
        with anyio.fail_after(60):
            outputs = [await handle.outputs() for handle in handles]
        log = [event for _, event in await log_of(eng.store)]
        await wait_for_stream(own_nats.url, STREAM, len(log), 60)
        with anyio.fail_after(10):
            while not eng.health()["nats-relay"].ok:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        audit = Audit()
        for handle in handles:
            audit_log(audit, await eng.history(handle.execution_id), "succeeded")
    audit_stream(audit, await read_stream(own_nats.url, STREAM, PREFIX), log)
    relay_lines = [r for r in caplog.records if r.name == "slipstream.nats" and r.levelno >= logging.WARNING]
    fault_summary.record(
        f"NATS down {OUTAGE:g} s during a run",
        len(handles),
        audit,
        note=f"{len(log)} events relayed, {launched_while_down} executions launched before NATS was back, "
        f"the relay logged {len(relay_lines)} warning",
    )
    assert not audit.problems, audit.problems
    assert outputs == [wf.mixed_result(4)] * len(handles)
    assert "retrying" in health[0], health
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.WARNING)
    # one line when the relay starts failing and one when it is back, not one per retry
    assert len(relay_lines) == 1, [r.getMessage() for r in relay_lines]
    assert any("event relay: back after" in r.getMessage() for r in caplog.records if r.name == "slipstream.nats")
