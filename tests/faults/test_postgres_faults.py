"""Postgres restarted, and unreachable for seconds, under `slipstream serve`, client engines and a
`slipstream run` following its execution; and Postgres unreachable when they start. A private
server (pgserver) is stopped and started; the machine's Postgres is never touched.

Serve and clients ride an outage out within a bounded time: every execution finishes, nothing is
lost or doubled, and each process logs one line when Postgres is lost and one when it is back,
not a traceback per retry."""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import anyio
import pytest

from engine import Engine, StoreUnavailable
from tests.conftest import PostgresControl, _admin, run_blocking, throwaway_postgres, with_database
from tests.engine.test_serve import Server

from . import _workflows as wf
from ._checks import Audit, audit_log
from .conftest import ROOT, FaultSummary

EXECUTIONS = 10
SERVE_OPTIONS = ("--executor", "local", "--resync-interval", "1")
# what serve may print besides the store's two lines; anything else (a warning per retry, a
# traceback) fails the test
QUIET = re.compile(
    r"serving executions|slipstream\.executions: execution (started|succeeded)|SIGTERM: stopping|^stopped$"
)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresControl]:
    with throwaway_postgres("a server this test may stop") as (server, pgdata):
        yield PostgresControl(server, pgdata)


@pytest.fixture
def database(postgres: PostgresControl) -> Iterator[str]:
    """A fresh database on the private server (it must be up when the test starts and ends)."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    run_blocking(_admin(postgres.dsn, f'CREATE DATABASE "{name}"'))
    yield with_database(postgres.dsn, name)
    run_blocking(_admin(postgres.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def store_lines(lines: list[str]) -> tuple[list[str], list[str]]:
    """The 'lost Postgres' and 'back after' lines among ``lines``."""
    return [line for line in lines if "lost Postgres at" in line], [line for line in lines if " back after " in line]


def cli_run(database: str) -> subprocess.Popen[str]:
    """`slipstream run --postgres` of `mixed`: with serve up it launches there and follows it."""
    argv = [sys.executable, "-c", "from engine._cli import main; main()", "run", "--postgres", database]
    return subprocess.Popen(
        [*argv, "--no-progress", "tests/faults/_workflows.py:mixed", "--n", "4"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(150)
@pytest.mark.parametrize("outage", [0.0, 5.0], ids=["restart", "down-5s"])
async def test_serve_clients_and_run_ride_out_the_outage(
    postgres: PostgresControl,
    database: str,
    outage: float,
    fault_summary: FaultSummary,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    # `run FILE:WF` names the module by the file's stem: serve imports it from that directory
    server = Server(["--postgres", database], "--path", str(ROOT / "tests" / "faults"), *SERVE_OPTIONS)
    try:
        await server.wait_for("serving executions")
        async with Engine.connect(postgres=database, run_loop=False) as client:
            handles = [await client.launch(wf.mixed, n=4) for _ in range(EXECUTIONS)]
            run = cli_run(database)
            with anyio.fail_after(30):  # under way: the CLI's execution launched, the others mid-run
                while len(await client.list_executions(limit=100)) <= EXECUTIONS:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            started = time.monotonic()
            if outage:
                await anyio.to_thread.run_sync(postgres.stop)
                await anyio.sleep(outage)
                await anyio.to_thread.run_sync(postgres.start)
            else:
                await anyio.to_thread.run_sync(postgres.restart)
            down = time.monotonic() - started
            with anyio.fail_after(90):  # bounded: an outage is a pause for the client, not an error
                outputs = [await handle.outputs() for handle in handles]
            out, err = await anyio.to_thread.run_sync(lambda: run.communicate(timeout=90))
            audit = Audit()
            for handle in handles:
                audit_log(audit, await client.history(handle.execution_id), "succeeded")
            cli_id = {s.execution_id for s in await client.list_executions(limit=100)} - {
                h.execution_id for h in handles
            }
            for execution_id in cli_id:
                audit_log(audit, await client.history(execution_id), "succeeded")
        code, _ = await server.stop()
    finally:
        server.kill()
    lost, back = store_lines(server.lines)
    fault_summary.record(
        f"Postgres {'restarted' if not outage else f'down {outage:g} s'} under serve, clients and run",
        EXECUTIONS + 1,
        audit,
        note=f"Postgres away {down:.1f} s; serve logged {len(lost)} 'lost' and {len(back)} 'back' lines, "
        f"{sum('Traceback' in line for line in server.lines)} tracebacks",
    )
    assert run.returncode == 0 and out.strip().splitlines()[-1] == str(wf.mixed_result(4)), (out, err)
    assert "Traceback" not in err
    assert not audit.problems, audit.problems
    assert outputs == [wf.mixed_result(4)] * EXECUTIONS
    assert code == 0, server.stderr
    # one line per change of state: lost, then back (a second pair at most, when a pooled
    # connection's failure is noticed after others already reconnected)
    assert 1 <= len(lost) == len(back) <= 2, server.stderr
    noise = [line for line in server.lines if line not in lost + back and not QUIET.search(line)]
    assert not noise, "\n".join(noise)
    if outage:
        seconds = max(float(re.search(r"back after ([\d.]+) s", line).group(1)) for line in back)  # type: ignore[union-attr]
        assert seconds >= outage - 0.5, back
    # the client engine: the same two lines at most per outage, no tracebacks
    client_lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(r.exc_info is None for r in client_lines), [r.getMessage() for r in client_lines]
    assert len(client_lines) <= 4, [r.getMessage() for r in client_lines]


@pytest.mark.timeout(90)
async def test_unreachable_at_start_is_an_error_for_a_client_and_a_wait_for_serve(
    postgres: PostgresControl, database: str, fault_summary: FaultSummary
) -> None:
    await anyio.to_thread.run_sync(postgres.stop)
    server: Server | None = None
    try:
        with pytest.raises(StoreUnavailable, match=r"cannot reach Postgres at .*; start the server"):
            async with Engine.connect(postgres=database, run_loop=False):
                pass
        argv = [sys.executable, "-c", "from engine._cli import main; main()", "executions", "list"]
        list_them = functools.partial(
            subprocess.run, [*argv, "--postgres", database], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        listing = await anyio.to_thread.run_sync(list_them)
        assert listing.returncode == 2 and "Traceback" not in listing.stderr, listing.stderr
        assert "cannot reach Postgres at" in listing.stderr and len(listing.stderr.strip().splitlines()) == 1
        server = Server(["--postgres", database], *SERVE_OPTIONS)
        await server.wait_for("retrying until it answers")
        await anyio.sleep(3)
        assert server.process.poll() is None
    finally:
        await anyio.to_thread.run_sync(postgres.start)
    try:
        await server.wait_for("serving executions", timeout=30)
        async with Engine.connect(postgres=database, run_loop=False) as client:
            handle = await client.launch(wf.mixed, n=4)
            assert await handle.outputs(timeout=60) == wf.mixed_result(4)
            audit = Audit()
            audit_log(audit, await client.history(handle.execution_id), "succeeded")
        code, _ = await server.stop()
    finally:
        server.kill()
    waited = [line for line in server.lines if "retrying until it answers" in line or "answered after" in line]
    fault_summary.record(
        "Postgres unreachable at start",
        1,
        audit,
        note="client: StoreUnavailable, CLI: one-line error, exit 2; serve waited: "
        + " / ".join(line.split(";")[-1].strip() for line in waited),
    )
    assert not audit.problems, audit.problems
    assert code == 0 and "Traceback" not in server.stderr, server.stderr
    assert len(waited) == 2, server.stderr  # one line when it starts waiting, one when it answers
