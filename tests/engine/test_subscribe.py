"""`Engine.subscribe`: typed events with acks, from the event store (SQLite, Postgres) and from
NATS JetStream (the relay's subjects)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from engine import ConfigError, Engine
from engine._subscribe import Delivery, Subscription, cursor_name, log_end
from engine.events import (
    AnyEvent,
    ExecutionCreated,
    ExecutionSucceeded,
    NodeSucceeded,
    encode_event_json,
)
from engine.interfaces import TERMINAL_STATUSES, GlobalEvent

from . import _workflows as wf
from .conftest import EngineFactory

TERMINAL_KINDS = ("ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted")


async def take(
    subscription: Subscription, until: Callable[[list[Delivery]], bool], timeout: float = 30.0
) -> list[Delivery]:
    """Deliveries until ``until(deliveries)`` holds."""
    got: list[Delivery] = []
    with anyio.fail_after(timeout):
        async for delivery in subscription:
            got.append(delivery)
            if until(got):
                return got
    raise AssertionError("the subscription ended")


def ended(*execution_ids: str) -> Callable[[list[Delivery]], bool]:
    def check(got: list[Delivery]) -> bool:
        done = {d.event.execution_id for d in got if type(d.event).__name__ in TERMINAL_KINDS}
        return set(execution_ids) <= done

    return check


def count(n: int) -> Callable[[list[Delivery]], bool]:
    return lambda got: len(got) >= n


async def run(eng: Engine, **options: Any) -> str:
    handle = await eng.launch(wf.diamond, x=2, **options)
    await handle.wait(timeout=30)
    return handle.execution_id


def assert_in_order_per_execution(events: list[AnyEvent]) -> None:
    versions: dict[str, list[int]] = {}
    for event in events:
        versions.setdefault(event.execution_id, []).append(event.version)
    for execution_id, seen in versions.items():
        assert seen == sorted(seen) and len(set(seen)) == len(seen), (execution_id, seen)


# -- from the event store ------------------------------------------------------------------------------


async def test_from_start_delivers_the_whole_log_typed_and_in_order(eng: Engine) -> None:
    first, second = await run(eng), await run(eng)
    async with eng.subscribe(from_start=True) as sub:
        got = await take(sub, ended(first, second))
    events = [d.event for d in got]
    assert_in_order_per_execution(events)
    for execution_id in (first, second):
        assert [e for e in events if e.execution_id == execution_id] == await eng.history(execution_id)
    assert isinstance(events[0], ExecutionCreated)
    positions = [d.position for d in got]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


async def test_a_new_subscription_starts_at_the_end(eng: Engine) -> None:
    before = await run(eng)
    async with eng.subscribe() as sub:
        after = await run(eng)
        got = await take(sub, ended(after))
    assert {d.event.execution_id for d in got} == {after}
    assert [d.event for d in got] == await eng.history(after)
    assert before != after


async def test_it_follows_events_as_they_are_committed(eng: Engine) -> None:
    async with eng.subscribe(kinds="ExecutionCreated,ExecutionSucceeded") as sub:
        handle = await eng.launch(wf.diamond, x=1)
        got = await take(sub, ended(handle.execution_id))
    assert [type(d.event) for d in got] == [ExecutionCreated, ExecutionSucceeded]


async def test_filters_by_project_domain_execution_and_kinds(eng: Engine) -> None:
    ml = await run(eng, project="ml", domain="staging")
    ml_dev = await run(eng, project="ml")
    other = await run(eng, project="web", domain="staging")
    last = await run(eng, project="zz")  # ends every stream below

    async with eng.subscribe(from_start=True, project="ml") as sub:
        got = await take(sub, ended(ml, ml_dev))
    assert {d.event.execution_id for d in got} == {ml, ml_dev}

    async with eng.subscribe(from_start=True, domain="staging") as sub:
        got = await take(sub, ended(ml, other))
    assert {d.event.execution_id for d in got} == {ml, other}

    async with eng.subscribe(from_start=True, project="ml", domain="staging", kinds=["NodeSucceeded"]) as sub:
        got = await take(sub, count(4))  # diamond: four task nodes
    assert {d.event.execution_id for d in got} == {ml}
    assert all(isinstance(d.event, NodeSucceeded) for d in got)

    async with eng.subscribe(from_start=True, execution_id=other) as sub:
        got = await take(sub, ended(other))
    assert [d.event for d in got] == await eng.history(other)

    async with eng.subscribe(from_start=True, kinds=["ExecutionSucceeded"]) as sub:
        got = await take(sub, ended(last))
    assert [d.event.execution_id for d in got] == [ml, ml_dev, other, last]


async def test_a_durable_subscription_resumes_after_its_last_ack(eng: Engine) -> None:
    execution_id = await run(eng)
    history = await eng.history(execution_id)
    name = f"audit-{uuid.uuid4().hex[:8]}"
    async with eng.subscribe(durable=name) as sub:  # the first time: from the beginning of the log
        got = await take(sub, count(5))
        await got[2].ack()  # acks the first three
    assert [d.event for d in got] == history[:5]
    assert await eng.store.read_cursor(cursor_name(name)) == got[2].position

    async with eng.subscribe(durable=name) as sub:  # the two un-acked ones come again
        again = await take(sub, ended(execution_id))
        await again[-1].ack()
    assert [d.event for d in again] == history[3:]

    async with eng.subscribe(durable=name) as sub:  # all acked: only what comes next
        later = await run(eng)
        more = await take(sub, ended(later))
        await more[-1].ack()
    assert [d.event for d in more] == await eng.history(later)


async def test_acks_are_cumulative_and_idempotent(eng: Engine) -> None:
    await run(eng)
    name = f"cumulative-{uuid.uuid4().hex[:8]}"
    async with eng.subscribe(durable=name) as sub:
        got = await take(sub, count(4))
        await got[3].ack()
        await got[1].ack()  # an earlier ack after a later one moves nothing back
        await got[3].ack()
    assert await eng.store.read_cursor(cursor_name(name)) == got[3].position


async def test_a_durable_position_moves_past_events_filtered_out(eng: Engine) -> None:
    await run(eng)
    name = f"aborts-{uuid.uuid4().hex[:8]}"
    async with eng.subscribe(durable=name, kinds=["ExecutionAborted"]) as sub:
        with anyio.move_on_after(1.0):
            await take(sub, count(1))
    assert await eng.store.read_cursor(cursor_name(name)) == await log_end(eng.store)


async def test_a_non_durable_ack_is_accepted_and_remembers_nothing(eng: Engine) -> None:
    await run(eng)
    async with eng.subscribe(from_start=True) as sub:
        got = await take(sub, count(2))
        await got[1].ack()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"kinds": ["NodeSucceded"]}, "unknown event kind(s) ['NodeSucceded']"),
        ({"kinds": ""}, "unknown event kind(s)"),
        ({"durable": "x", "from_start": True}, "from_start=True does not apply to the durable subscription 'x'"),
        ({"durable": " "}, "give a non-empty name"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, Any], fragment: str) -> None:
    eng = Engine.embedded(tmp_path)
    with pytest.raises(ConfigError) as caught:
        eng.subscribe(**options)
    assert fragment in str(caught.value)


class _Seqs:
    """A store whose log holds events at the given positions (for `log_end`)."""

    def __init__(self, seqs: list[int]) -> None:
        self.seqs = sorted(seqs)
        self.reads = 0

    async def read_all(self, after_seq: int = 0, limit: int = 1000) -> list[GlobalEvent]:
        self.reads += 1
        found = [s for s in self.seqs if s > after_seq][:limit]
        return [GlobalEvent(s, None) for s in found]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "seqs",
    [[], [1], [7], [1, 2, 3], list(range(1, 1001)), [3, 9, 10, 200, 201, 5000], list(range(5, 100_000, 37))],
)
async def test_log_end_finds_the_last_position_in_few_reads(seqs: list[int]) -> None:
    store = _Seqs(seqs)
    assert await log_end(store) == (max(seqs) if seqs else 0)  # type: ignore[arg-type]
    assert store.reads <= 2 * (max(seqs, default=0).bit_length() + 2)  # O(log of the last position)


# -- from NATS JetStream -------------------------------------------------------------------------------


@pytest.fixture
async def stream(nats_url: str) -> Any:
    """A stream of its own, under a subject prefix of its own (the relay's is shared)."""
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"T{uuid.uuid4().hex[:12]}"
    prefix = f"{name.lower()}.events"
    await js.add_stream(name=name, subjects=[f"{prefix}.>"])
    try:
        yield _Stream(js, name, prefix, nats_url)
    finally:
        await js.delete_stream(name)
        await nc.close()


class _Stream:
    def __init__(self, js: Any, name: str, prefix: str, url: str) -> None:
        self.js, self.name, self.prefix, self.url = js, name, prefix, url

    async def publish(self, events: list[AnyEvent], project: str, domain: str) -> None:
        """What the relay does: one JSON message per event, on the execution's subject."""
        for event in events:
            subject = f"{self.prefix}.{project}.{domain}.{event.execution_id}"
            headers = {"Nats-Msg-Id": f"{event.execution_id}:{event.version}"}
            await self.js.publish(subject, encode_event_json(event), headers=headers)

    def subscribe(self, eng: Engine, **options: Any) -> Subscription:
        from engine._subscribe import open_subscription

        kinds = options.pop("kinds", None)
        durable = options.pop("durable", None)
        from_start = options.pop("from_start", False)
        return open_subscription(
            eng.store,
            self.url,
            kinds=kinds,
            durable=durable,
            from_start=from_start,
            nats_options={"stream": self.name, "prefix": self.prefix, "poll": 0.2},
            **options,
        )


@pytest.fixture
async def histories(tmp_path: Path) -> list[list[AnyEvent]]:
    """The logs of three finished executions (an embedded engine ran them)."""
    async with Engine.embedded(tmp_path / "runs", retry_delay=0.05) as eng:
        ids = [await run(eng) for _ in range(3)]
        return [await eng.history(i) for i in ids]


async def test_nats_delivers_the_same_typed_events_in_order(
    stream: _Stream, histories: list[list[AnyEvent]], tmp_path: Path
) -> None:
    eng = Engine.embedded(tmp_path / "client")
    a, b, c = histories
    # interleaved, as the relay publishes concurrent executions
    for pair in zip(a, b, strict=False):
        await stream.publish([pair[0]], "ml", "development")
        await stream.publish([pair[1]], "ml", "production")
    await stream.publish(c, "web", "development")
    await stream.publish(a[len(b) :], "ml", "development")
    async with stream.subscribe(eng, from_start=True) as sub:
        got = await take(sub, count(len(a) + len(b) + len(c)))
    events = [d.event for d in got]
    assert_in_order_per_execution(events)
    for history in histories:
        assert [e for e in events if e.execution_id == history[0].execution_id] == history
    assert [msgspec.json.encode(e) for e in events][:2] == [msgspec.json.encode(a[0]), msgspec.json.encode(b[0])]


async def test_nats_filters(stream: _Stream, histories: list[list[AnyEvent]], tmp_path: Path) -> None:
    eng = Engine.embedded(tmp_path / "client")
    a, b, c = histories
    await stream.publish(a, "ml", "development")
    await stream.publish(b, "ml", "production")
    await stream.publish(c, "web", "development")
    a_id, b_id, c_id = (h[0].execution_id for h in histories)

    async with stream.subscribe(eng, from_start=True, project="ml") as sub:
        got = await take(sub, ended(a_id, b_id))
    assert {d.event.execution_id for d in got} == {a_id, b_id}
    async with stream.subscribe(eng, from_start=True, domain="development", kinds=["ExecutionSucceeded"]) as sub:
        got = await take(sub, count(2))
    assert sorted(d.event.execution_id for d in got) == sorted([a_id, c_id])
    async with stream.subscribe(eng, from_start=True, execution_id=b_id) as sub:
        got = await take(sub, ended(b_id))
    assert [d.event for d in got] == b


async def test_nats_new_events_only_unless_from_start(
    stream: _Stream, histories: list[list[AnyEvent]], tmp_path: Path
) -> None:
    eng = Engine.embedded(tmp_path / "client")
    a, b, _ = histories
    await stream.publish(a, "ml", "development")
    async with stream.subscribe(eng) as sub:
        await stream.publish(b, "ml", "development")
        got = await take(sub, ended(b[0].execution_id))
    assert [d.event for d in got] == b


async def test_nats_durable_resumes_after_its_last_ack(
    stream: _Stream, histories: list[list[AnyEvent]], tmp_path: Path
) -> None:
    eng = Engine.embedded(tmp_path / "client")
    a, b, _ = histories
    await stream.publish(a, "ml", "development")
    name = f"audit-{uuid.uuid4().hex[:8]}"
    async with stream.subscribe(eng, durable=name) as sub:  # first time: the whole stream
        got = await take(sub, count(5))
        await got[2].ack()
    assert [d.event for d in got] == a[:5]
    async with stream.subscribe(eng, durable=name) as sub:  # handed back at close: again at once
        again = await take(sub, ended(a[0].execution_id), timeout=10)
        await again[-1].ack()
    assert [d.event for d in again] == a[3:]
    async with stream.subscribe(eng, durable=name, project="ml") as sub:  # a new filter, same position
        await stream.publish(b, "ml", "development")
        more = await take(sub, ended(b[0].execution_id), timeout=10)
        await more[-1].ack()
    assert [d.event for d in more] == b


async def test_nats_without_the_stream_is_a_clear_error(nats_url: str, tmp_path: Path) -> None:
    from engine._subscribe import open_subscription

    sub = open_subscription(None, nats_url, nats_options={"stream": f"NONE{uuid.uuid4().hex[:8]}"})
    with pytest.raises(ConfigError, match="has no JetStream stream"):
        await sub.open()


async def test_nats_unreachable_is_a_clear_error() -> None:
    from engine._subscribe import open_subscription

    sub = open_subscription(None, "nats://127.0.0.1:1", nats_options={"connect_timeout": 1})
    with pytest.raises(ConfigError, match=re.escape("cannot reach NATS at 'nats://127.0.0.1:1'")):
        await sub.open()


def test_the_engine_reads_nats_when_it_has_a_url(tmp_path: Path) -> None:
    """Routing only: nothing connects before the subscription opens."""
    assert type(Engine.embedded(tmp_path).subscribe()._source).__name__ == "StoreEventSource"
    eng = Engine.embedded(tmp_path, nats="nats://127.0.0.1:1")
    assert eng.nats_url == "nats://127.0.0.1:1"
    assert type(eng.subscribe()._source).__name__ == "NatsEventSource"


def test_terminal_statuses_cover_the_terminal_kinds() -> None:
    assert {k.removeprefix("Execution").lower() for k in TERMINAL_KINDS} == set(TERMINAL_STATUSES)


async def test_subscriptions_on_both_stores(make_engine: EngineFactory) -> None:
    """The same subscription on a second engine sharing the store sees the first one's events."""
    async with make_engine() as runner, make_engine(run_loop=False) as watcher:
        async with watcher.subscribe(kinds=["ExecutionSucceeded"]) as sub:
            handle = await runner.launch(wf.diamond, x=5)
            got = await take(sub, count(1))
    assert got[0].event.execution_id == handle.execution_id
