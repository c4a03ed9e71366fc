"""A declared secret reaches its task and nothing else: error messages, tracebacks and captured
output are redacted before they are recorded, so no store, blob or file under the state directory
holds the value."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from engine import Engine, TaskFailed
from engine.events import encode_event

from . import _secret_workflows as wf

CANARY = "canary-3f9c2a7be1d04"


@pytest.fixture(autouse=True)
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SLIPSTREAM_TEST_CANARY", CANARY)
    return CANARY


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


async def test_no_event_blob_log_or_file_holds_a_secret(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    async with Engine.embedded(state_dir=tmp_path) as eng:
        assert await (await eng.launch(wf.leaky)).outputs(timeout=30) == 1
        assert await (await eng.launch(wf.leaky_map, xs=[1, 2, 3])).outputs(timeout=30) == [1, 2, 3]
        failing = await eng.launch(wf.leaky_failure)
        with pytest.raises(TaskFailed) as failed:
            await failing.outputs(timeout=30)
        assert CANARY not in str(failed.value) and "[redacted SLIPSTREAM_TEST_CANARY]" in failed.value.message
        logs = [entry.text async for entry in eng.logs((await eng.list_executions())[-1].execution_id)]
    assert logs and all("[redacted SLIPSTREAM_TEST_CANARY]" in text and CANARY not in text for text in logs)
    assert files_holding(tmp_path, CANARY.encode()) == []
    echoed = capfd.readouterr()
    assert CANARY not in echoed.out + echoed.err
    assert "using token [redacted SLIPSTREAM_TEST_CANARY]" in echoed.out


async def test_the_event_stores_hold_no_secret(make_engine, store_kind: str, request: pytest.FixtureRequest) -> None:
    async with make_engine() as eng:
        handle = await eng.launch(wf.leaky)
        await handle.outputs(timeout=30)
        history = await eng.history(handle.execution_id)
        assert any(getattr(event, "error", None) for event in history)  # the first attempt failed
        assert all(CANARY.encode() not in encode_event(event) for event in history)
        if store_kind == "postgres":  # the rows themselves, as stored
            connection = await asyncpg.connect(request.getfixturevalue("postgres_database"))
            try:
                rows = await connection.fetch(f'SELECT payload FROM "{eng.store.schema}".events')  # type: ignore[attr-defined]
            finally:
                await connection.close()
            assert rows and not any(CANARY.encode() in bytes(row["payload"]) for row in rows)


def test_short_values_are_not_redacted() -> None:
    from engine._capture import Redactor

    redact = Redactor({"PIN": "42", "TOKEN": "abcdef", "LONGER": "abcdefgh"})
    assert redact("42 abcdefgh abcdef") == "42 [redacted LONGER] [redacted TOKEN]"


async def test_the_event_stream_holds_no_secret(tmp_path: Path, nats_url: str) -> None:
    import nats

    from plugins.nats import NatsRelay
    from tests.plugins._stream import delete_stream, relay_names, stream_count, wait_for_stream

    stream, prefix = relay_names()
    try:
        relay = NatsRelay(nats_url, stream=stream, prefix=prefix)
        async with Engine.embedded(state_dir=tmp_path, services=[relay]) as eng:
            await (await eng.launch(wf.leaky)).outputs(timeout=30)
            with pytest.raises(TaskFailed):
                await (await eng.launch(wf.leaky_failure)).outputs(timeout=30)
            logged = len(await eng.store.read_all(0, 100_000))
            await wait_for_stream(nats_url, stream, logged, timeout=30)
        assert await stream_count(nats_url, stream) == logged
        connection = await nats.connect(nats_url)
        try:
            consumer = await connection.jetstream().pull_subscribe(f"{prefix}.>", stream=stream)
            messages = await consumer.fetch(logged, timeout=5)
        finally:
            await connection.close()
        assert len(messages) == logged
        assert any(b"redacted SLIPSTREAM_TEST_CANARY" in m.data for m in messages)
        assert not any(CANARY.encode() in m.data for m in messages)
    finally:
        await delete_stream(nats_url, stream)
