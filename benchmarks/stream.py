"""``python -m benchmarks stream [--executions 1000] [--rate 10000] [--seconds 5] [--backlog 50000]``

The event stream: the outbox relay (plugins/nats/relay.py) on Postgres and NATS JetStream, against
raw JetStream publishing measured in the same run on the same server.

- **Baselines.** ``--messages`` messages of the relay's size published straight to a stream of
  their own: acked one by one (``await js.publish``), and pipelined with the relay's window of acks
  in flight (``publish_async``). Messages per second.
- **Relay throughput.** A backlog of ``--backlog`` committed events (written with ``append_many``
  before the relay starts) drained into a fresh stream by one relay: messages per second, and the
  ratio to both baselines.
- **Lag, engine load.** ``--executions`` executions of a three-task workflow launched at once on an
  engine with the relay; a JetStream consumer takes every event and records ``received - event.at``
  (``at`` is stamped in the round that commits the event). p50/p99, and the event rate reached.
- **Lag, paced load.** Events appended at ``--rate`` events/s (every 10 ms one transaction of five
  events for each of a rotating set of the 200 executions) for ``--seconds``; the lag of each is
  ``received - commit`` (the moment its ``append_many`` returned). p50/p99 against the target:
  p99 under 50 ms at 10,000 events/s.

The relay runs in this process (with the engine, in the engine run), as in ``slipstream serve``;
the consumer, and the paced run's writer, each run in a process of their own. All of them share
the machine's CPUs with Postgres and NATS.
Postgres: ``--postgres`` or ``$SLIPSTREAM_TEST_POSTGRES_DSN`` or the local default (a throw-away
schema); NATS: ``--nats`` or ``$SLIPSTREAM_TEST_NATS_URL`` or ``nats://127.0.0.1:4222`` (throw-away
streams).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import Engine, task, workflow
from engine._postgres_store import PostgresEventStore
from engine.events import NodeQueued, decode_event_json, encode_event_json
from engine.interfaces import ServiceContext
from plugins.local import LocalExecutor
from plugins.nats import NatsRelay, msg_id

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_NATS = "nats://127.0.0.1:4222"
PROJECT = "bench"
PACED_EXECUTIONS = 200
PER_EXECUTION = 5  # events per execution in one paced append


@task
async def step(x: int) -> int:
    return x + 1


@workflow
def three(x: int = 0) -> int:
    return step(x=step(x=step(x=x)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream", description=__doc__.split("\n\n")[1])
    parser.add_argument("--executions", type=int, default=1000, help="executions launched at once (engine lag)")
    parser.add_argument("--rate", type=int, default=10_000, help="events/s appended in the paced run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the paced run")
    parser.add_argument("--backlog", type=int, default=50_000, help="events the relay drains (throughput)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per raw JetStream baseline")
    parser.add_argument("--window", type=int, default=1024, help="acks in flight (relay and windowed baseline)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SLIPSTREAM_TEST_POSTGRES_DSN")
        or os.environ.get("SLIPSTREAM_POSTGRES_DSN")
        or DEFAULT_DSN,
    )
    parser.add_argument("--nats", default=os.environ.get("SLIPSTREAM_TEST_NATS_URL") or DEFAULT_NATS)
    return parser.parse_args(argv)


def _names() -> tuple[str, str]:
    token = uuid.uuid4().hex[:10]
    return f"BENCH_{token}", f"bench.{token}.events"


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "count": len(ordered),
        "p50_ms": round(pick(0.50) * 1000, 2),
        "p99_ms": round(pick(0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def _drop(dsn: str, schema: str, nats: str, streams: list[str]) -> None:
    import asyncpg
    import nats as nats_client

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    nc = await nats_client.connect(nats)
    try:
        js = nc.jetstream()
        for stream in streams:
            try:
                await js.delete_stream(stream)
            except Exception:  # a stream never made
                pass
    finally:
        await nc.close()


async def _stream_count(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


# -- raw JetStream ------------------------------------------------------------------------------------


async def raw_baselines(url: str, messages: int, window: int, payload: bytes, streams: list[str]) -> dict[str, Any]:
    """Publishing ``messages`` copies of ``payload`` straight to JetStream: one by one, and windowed."""
    import nats
    from nats.js import api

    nc = await nats.connect(url)
    figures: dict[str, Any] = {"messages": messages, "payload_bytes": len(payload), "window": window}
    try:
        js = nc.jetstream(publish_async_max_pending=window)
        for mode in ("one_by_one", "windowed"):
            stream, prefix = _names()
            streams.append(stream)
            await js.add_stream(
                api.StreamConfig(
                    name=stream, subjects=[f"{prefix}.>"], storage=api.StorageType.FILE, duplicate_window=120
                )
            )
            started = time.perf_counter()
            if mode == "one_by_one":
                for i in range(messages):
                    await js.publish(f"{prefix}.p.d.e{i % 200}", payload, headers={"Nats-Msg-Id": f"e:{i}"})
            else:
                pending: list[asyncio.Future[Any]] = []
                for i in range(messages):
                    if len(pending) >= window:
                        await pending[0]
                        pending = [f for f in pending if not f.done()]
                    pending.append(
                        await js.publish_async(f"{prefix}.p.d.e{i % 200}", payload, headers={"Nats-Msg-Id": f"e:{i}"})
                    )
                await asyncio.gather(*pending)
            seconds = time.perf_counter() - started
            assert await _stream_count(js, stream) == messages
            figures[f"{mode}_msgs_per_s"] = round(messages / seconds)
    finally:
        await nc.close()
    return figures


# -- the relay ---------------------------------------------------------------------------------------


async def _create_executions(dsn: str, schema: str, count: int) -> list[str]:
    """``count`` executions with just their ExecutionCreated (launched by a client engine, which
    closes its store on the way out: a store of its own)."""
    async with Engine(PostgresEventStore(dsn, schema=schema), {"local": LocalExecutor()}, run_loop=False) as client:
        handles = [await client.launch(three, project=PROJECT, x=i) for i in range(count)]
    return [h.execution_id for h in handles]


def _queued(execution_id: str, version: int) -> NodeQueued:
    return NodeQueued(
        execution_id=execution_id, version=version, at=datetime.now(UTC), node_id=f"n{version}", attempt=1
    )


async def relay_throughput(dsn: str, url: str, backlog: int, window: int, streams: list[str]) -> dict[str, Any]:
    """One relay draining a backlog of ``backlog`` committed events into a fresh stream."""
    import nats

    schema = f"bench_stream_{uuid.uuid4().hex[:10]}"
    store = PostgresEventStore(dsn, schema=schema)
    try:
        await store.start()
        ids = await _create_executions(dsn, schema, PACED_EXECUTIONS)
        versions = dict.fromkeys(ids, 1)
        written = len(ids)
        while written < backlog:
            batches = []
            for execution_id in ids[: min(len(ids), backlog - written)]:
                batch = [_queued(execution_id, versions[execution_id] + k + 1) for k in range(5)]
                batches.append((execution_id, versions[execution_id], batch))
                versions[execution_id] += 5
                written += 5
            await store.append_many(batches)
        stream, prefix = _names()
        streams.append(stream)
        relay = NatsRelay(url, stream=stream, prefix=prefix, window=window)
        await relay.start(ServiceContext(store=store, wake=lambda _: None, serving=True))
        nc = await nats.connect(url)
        js = nc.jetstream()
        started = time.perf_counter()
        runner = asyncio.create_task(relay.run())
        try:
            while relay.published < written:  # noqa: ASYNC110 - polled: the count moves on every ack
                await asyncio.sleep(0.005)
            seconds = time.perf_counter() - started
            assert await _stream_count(js, stream) == written
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await relay.stop()
            await nc.close()
        return {"events": written, "seconds": round(seconds, 3), "msgs_per_s": round(written / seconds)}
    finally:
        await store.close()
        await _drop(dsn, schema, url, [])


# -- lag: a consumer (and a writer) in processes of their own ------------------------------------------
#
# The relay runs in this process, as in `slipstream serve`; the consumer that measures, and the
# writer of the paced run, each run in a process of their own, so that none of them takes the
# relay's event loop. Lags are differences of wall-clock times (time.time) of one machine.

CHILD = "import sys; from benchmarks.stream import child; child(sys.argv[1:])"
READY = "ready"


def _save(path: str, value: Any) -> None:
    Path(path).write_text(json.dumps(value))


def _load(path: str) -> Any:
    return json.loads(Path(path).read_text())


async def consume(url: str, stream: str, prefix: str, expected: int, idle: float, out: str, mode: str) -> None:
    """Subscribe to the relay's stream from now on; record, per message, its receive time (``msgid``
    mode: by Msg-Id) or its lag from the event's ``at`` (``at`` mode); stop after ``expected``
    messages (0: any number) or ``idle`` seconds without one; write the record as JSON to ``out``."""
    import nats
    from nats.js import api

    received: dict[str, float] = {}
    lags: list[float] = []
    last = [time.monotonic()]
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def on_message(message: Any) -> None:
        now = time.time()
        last[0] = time.monotonic()
        if mode == "msgid":
            received[message.headers["Nats-Msg-Id"]] = now
        else:
            lags.append(now - decode_event_json(message.data).at.timestamp())

    config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW, ack_policy=api.AckPolicy.NONE)
    sub = await js.subscribe(f"{prefix}.>", stream=stream, cb=on_message, config=config, pending_msgs_limit=2_000_000)
    print(READY, flush=True)
    while (not expected or len(received) + len(lags) < expected) and time.monotonic() - last[0] < idle:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await sub.unsubscribe()
    await nc.close()
    _save(out, {"received": received, "lags": lags})


async def write_paced(dsn: str, schema: str, rate: int, seconds: float, ids_file: str, out: str) -> None:
    """Append ``rate * seconds`` events at ``rate`` events/s to the executions listed in ``ids_file``
    (each at version 1); write their commit times by Msg-Id, and the rate reached, to ``out``."""
    ids: list[str] = _load(ids_file)
    versions = dict.fromkeys(ids, 1)
    committed: dict[str, float] = {}
    total = int(rate * seconds)
    per_tick = max(1, round(rate * 0.01))
    async with PostgresEventStore(dsn, schema=schema, max_size=4) as store:
        started = time.perf_counter()
        written = turn = 0
        while written < total:
            batches = []
            count = min(per_tick, total - written)
            # a round's worth per execution: a few events each, as the control loop writes them
            for k in range(0, count, PER_EXECUTION):
                execution_id = ids[(turn + k // PER_EXECUTION) % len(ids)]
                before = versions[execution_id]
                n = min(PER_EXECUTION, count - k)
                batches.append((execution_id, before, [_queued(execution_id, before + j + 1) for j in range(n)]))
                versions[execution_id] = before + n
            turn += len(batches)
            await store.append_many(batches)
            now = time.time()
            for execution_id, _, events in batches:
                for event in events:
                    committed[msg_id(execution_id, event.version)] = now
            written += count
            ahead = written / rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        elapsed = time.perf_counter() - started
    _save(out, {"committed": committed, "events": written, "seconds": elapsed})


def child(argv: list[str]) -> None:
    """Entry point of the consumer and writer processes: ``consume URL STREAM PREFIX EXPECTED IDLE
    OUT MODE`` or ``write DSN SCHEMA RATE SECONDS IDS_FILE OUT``."""
    if argv[0] == "consume":
        url, stream, prefix, expected, idle, out, mode = argv[1:8]
        asyncio.run(consume(url, stream, prefix, int(expected), float(idle), out, mode))
    else:
        dsn, schema, rate, seconds, ids_file, out = argv[1:7]
        asyncio.run(write_paced(dsn, schema, int(rate), float(seconds), ids_file, out))


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )


async def _start_consumer(*args: str) -> asyncio.subprocess.Process:
    process = await _spawn("consume", *args)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.decode().strip() != READY:
        raise RuntimeError(f"the consumer process did not start (exit {await process.wait()})")
    return process


async def _finish(process: asyncio.subprocess.Process, what: str, timeout: float) -> None:
    code = await asyncio.wait_for(process.wait(), timeout)
    if code != 0:
        raise RuntimeError(f"the {what} process exited {code}")


async def engine_lag(dsn: str, url: str, executions: int, window: int, streams: list[str]) -> dict[str, Any]:
    """Lag of every event of ``executions`` executions launched at once on an engine with the relay."""
    schema = f"bench_stream_{uuid.uuid4().hex[:10]}"
    stream, prefix = _names()
    streams.append(stream)
    store = PostgresEventStore(dsn, schema=schema)
    relay = NatsRelay(url, stream=stream, prefix=prefix, window=window)
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "consumer.json")
        try:
            async with Engine(store, {"local": LocalExecutor()}, services=[relay], workers=8) as eng:
                # the relay made the stream at its start
                consumer = await _start_consumer(url, stream, prefix, "0", "5", out, "at")
                started = time.perf_counter()
                handles = [await eng.launch(three, project=PROJECT, x=i) for i in range(executions)]
                for handle in handles:
                    await handle.wait()
                seconds = time.perf_counter() - started
                total = 0
                async for _ in _all(store):
                    total += 1
                await _finish(consumer, "consumer", 120)
            lags = _load(out)["lags"]
        finally:
            await _drop(dsn, schema, url, [])
    return {
        "executions": executions,
        "events": total,
        "received": len(lags),
        "events_per_s": round(total / seconds),
        "lag": _percentiles(lags),
    }


async def _all(store: PostgresEventStore) -> Any:
    after = 0
    while page := await store.read_all(after, 5000):
        for item in page:
            yield item
        after = page[-1].seq


async def paced_lag(dsn: str, url: str, rate: int, seconds: float, window: int, streams: list[str]) -> dict[str, Any]:
    """Lag from commit to consumer of events appended at ``rate`` events/s for ``seconds``."""
    schema = f"bench_stream_{uuid.uuid4().hex[:10]}"
    stream, prefix = _names()
    streams.append(stream)
    store = PostgresEventStore(dsn, schema=schema)
    relay = NatsRelay(url, stream=stream, prefix=prefix, window=window)
    total = int(rate * seconds)
    with tempfile.TemporaryDirectory() as directory:
        ids_file, written, consumed = (str(Path(directory) / name) for name in ("ids", "writer", "consumer"))
        try:
            await store.start()
            ids = await _create_executions(dsn, schema, PACED_EXECUTIONS)
            _save(ids_file, ids)
            await relay.start(ServiceContext(store=store, wake=lambda _: None, serving=True))
            runner = asyncio.create_task(relay.run())
            try:
                while relay.published < len(ids):  # noqa: ASYNC110 - the creations go out before the run
                    await asyncio.sleep(0.01)
                consumer = await _start_consumer(url, stream, prefix, str(total), "30", consumed, "msgid")
                writer = await _spawn("write", dsn, schema, str(rate), str(seconds), ids_file, written)
                await _finish(writer, "writer", seconds * 10 + 60)
                await _finish(consumer, "consumer", 120)
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                await relay.stop()
            writes = _load(written)
            received = _load(consumed)["received"]
        finally:
            await store.close()
            await _drop(dsn, schema, url, [])
    committed = writes["committed"]
    lags = [received[key] - at for key, at in committed.items() if key in received]
    return {
        "target_events_per_s": rate,
        "events": writes["events"],
        "events_per_s": round(writes["events"] / writes["seconds"]),
        "received": len(received),
        "lag": _percentiles(lags),
    }


async def main(argv: list[str]) -> dict[str, Any]:
    """Run the suite; the returned figures are what ``benchmarks/results/stream.json`` records."""
    args = parse_args(argv)
    streams: list[str] = []
    load_before = os.getloadavg()[0]
    sample = encode_event_json(_queued(uuid.uuid4().hex[:20], 7))
    try:
        raw = await raw_baselines(args.nats, args.messages, args.window, sample, streams)
        print(f"raw JetStream: {raw}", flush=True)
        relay = await relay_throughput(args.postgres, args.nats, args.backlog, args.window, streams)
        print(f"relay backlog: {relay}", flush=True)
        paced = await paced_lag(args.postgres, args.nats, args.rate, args.seconds, args.window, streams)
        print(f"paced lag: {paced}", flush=True)
        load = await engine_lag(args.postgres, args.nats, args.executions, args.window, streams)
        print(f"engine lag: {load}", flush=True)
    finally:
        await _drop(args.postgres, "bench_stream_none", args.nats, streams)
    p99 = paced["lag"].get("p99_ms")
    return {
        "suite": "stream",
        "command": "python -m benchmarks stream " + " ".join(argv),
        # the machine is shared: its 1-minute load average before and after the run, against its CPU count
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "raw_jetstream": raw,
        "relay": {
            **relay,
            "vs_raw_one_by_one": round(relay["msgs_per_s"] / raw["one_by_one_msgs_per_s"], 2),
            "vs_raw_windowed": round(relay["msgs_per_s"] / raw["windowed_msgs_per_s"], 2),
        },
        "lag_paced": paced,
        "lag_engine": load,
        "targets": {
            "p99_lag_ms_under": 50,
            "at_events_per_s": 10_000,
            "paced_p99_ms": p99,
            "paced_rate_reached": paced["events_per_s"],
            "met": bool(p99 is not None and p99 < 50 and paced["events_per_s"] >= 10_000 * 0.95),
        },
    }
