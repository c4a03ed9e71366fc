"""The `Catalog` contract, run against both backends: SQLite (embedded) and Postgres (server).

Every test takes the ``catalog`` fixture, parametrized over the backends, so one suite states what a
catalog must do: memoize by cache key (newest first, within a maximum age), record idempotently,
evict, grant a reservation to one owner at a time (with renewal, heartbeats and takeover after
expiry), publish and query named, partitioned artifacts, and keep lineage edges.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from catalog import PostgresCatalog, SqliteCatalog
from catalog._sql_catalog import SqlCatalog
from engine.interfaces import ArtifactDraft, CacheKey, Catalog, LineageEdge

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    if request.param == "sqlite":
        made: Catalog = SqliteCatalog(tmp_path / "catalog.db")
    else:
        database = request.getfixturevalue("postgres_database")
        made = PostgresCatalog(database, schema=request.getfixturevalue("postgres_schema"))
    async with made:
        yield made


def key(inputs: str = "i1", *, task: str = "train", version: str = "1", interface: str = "sig") -> CacheKey:
    return CacheKey("proj", "development", task, version, interface, inputs)


def draft(k: CacheKey, value: bytes = b"\x01", *, execution: str = "e1", node: str = "n", attempt: int = 1):
    return ArtifactDraft(k, {"o0": value}, execution, node, attempt)


async def test_a_stored_artifact_is_found_by_its_key(catalog: Catalog) -> None:
    assert await catalog.lookup(key(), now=T0) is None
    stored = await catalog.put(draft(key(), b"\x2a"), now=T0)
    found = await catalog.lookup(key(), now=T0 + timedelta(seconds=1))
    assert found == stored
    assert found.outputs == {"o0": b"\x2a"} and found.key == key().digest and found.input_hash == "i1"
    assert (found.execution_id, found.node_id, found.attempt) == ("e1", "n", 1)
    assert found.dataset == key().dataset and found.created_at == T0


async def test_every_part_of_the_key_matters(catalog: Catalog) -> None:
    await catalog.put(draft(key()), now=T0)
    for other in (key("i2"), key(task="eval"), key(version="2"), key(interface="sig2")):
        assert await catalog.lookup(other, now=T0) is None
    other_project = CacheKey("other", "development", "train", "1", "sig", "i1")
    assert await catalog.lookup(other_project, now=T0) is None


async def test_an_artifact_of_another_dataset_never_answers_a_key(catalog: Catalog) -> None:
    """A row carrying this key's digest under another project's (or task's) dataset, newer than
    the real one, as a tenant writing SQL of its own could record: lookups do not return it."""
    assert isinstance(catalog, SqlCatalog)
    mine = await catalog.put(draft(key(), b"\x01"), now=T0)
    for other in (CacheKey("other", "development", "train", "1", "sig", "i1"), key(task="eval")):
        forged = await catalog.put(draft(other, b"\x66", execution="evil"), now=T0)
        async with catalog.transaction() as tx:
            await tx.execute(
                "UPDATE catalog_artifacts SET cache_key = ?, created_at = ? WHERE id = ?",
                key().digest,
                catalog.to_db_time(T0 + timedelta(days=1)),
                forged.id,
            )
    assert await catalog.lookup(key(), now=T0 + timedelta(days=2)) == mine
    assert await catalog.lookup_many([key(), key("i2")], now=T0 + timedelta(days=2)) == [mine, None]


async def test_put_is_idempotent_per_attempt_and_lookup_gives_the_newest(catalog: Catalog) -> None:
    first = await catalog.put(draft(key(), b"\x01", execution="e1"), now=T0)
    again = await catalog.put(draft(key(), b"\x01", execution="e1"), now=T0 + timedelta(seconds=5))
    assert again == first  # the replayed record kept its time
    newer = await catalog.put(draft(key(), b"\x02", execution="e2"), now=T0 + timedelta(seconds=10))
    assert await catalog.lookup(key(), now=T0 + timedelta(seconds=11)) == newer
    assert len(await catalog.list_artifacts(task="train")) == 2


async def test_max_age_hides_older_artifacts(catalog: Catalog) -> None:
    await catalog.put(draft(key()), now=T0)
    assert await catalog.lookup(key(), now=T0 + timedelta(seconds=59), max_age=60) is not None
    assert await catalog.lookup(key(), now=T0 + timedelta(seconds=61), max_age=60) is None
    assert await catalog.lookup(key(), now=T0 + timedelta(days=365)) is not None


async def test_lookup_many_answers_in_order(catalog: Catalog) -> None:
    keys = [key(f"i{n}") for n in range(1200)]  # more than one query's batch
    await catalog.put_many(
        [draft(k, bytes([n % 200]), node=f"m/{n}") for n, k in enumerate(keys) if n % 3 == 0], now=T0
    )
    found = await catalog.lookup_many([*keys, keys[0]], now=T0)
    assert [f is not None for f in found] == [n % 3 == 0 for n in range(1200)] + [True]
    assert found[3] is not None and found[3].outputs == {"o0": bytes([3])} and found[3].node_id == "m/3"


async def test_get_by_id_or_prefix_and_list_filters(catalog: Catalog) -> None:
    a = await catalog.put(draft(key("a")), now=T0)
    b = await catalog.put(draft(key("b", task="eval")), now=T0 + timedelta(seconds=1))
    assert await catalog.get(a.id) == a
    assert await catalog.get(a.id[:10]) == a
    assert await catalog.get("0" * 32) is None
    assert await catalog.get("abc") is None  # too short to be a prefix
    assert [x.id for x in await catalog.list_artifacts()] == [b.id, a.id]
    assert [x.id for x in await catalog.list_artifacts(task="eval")] == [b.id]
    assert await catalog.list_artifacts(project="nope") == []
    assert len(await catalog.list_artifacts(limit=1)) == 1


async def test_evict_by_id_and_by_task(catalog: Catalog) -> None:
    a = await catalog.put(draft(key("a")), now=T0)
    await catalog.put(draft(key("b")), now=T0)
    await catalog.put(draft(key("c", task="eval")), now=T0)
    assert await catalog.evict(artifact_id=a.id) == 1
    assert await catalog.lookup(key("a"), now=T0) is None
    assert await catalog.evict(artifact_id=a.id) == 0
    assert await catalog.evict(task="train") == 1
    assert [x.dataset.name for x in await catalog.list_artifacts()] == ["eval"]
    with pytest.raises(ValueError, match="exactly one"):
        await catalog.evict()


# --- reservations ----------------------------------------------------------------------------------


async def test_one_owner_holds_a_key_until_it_releases_it(catalog: Catalog) -> None:
    held = await catalog.reserve("k", "alice", now=T0, ttl=30)
    assert held.owner == "alice" and held.expires_at == T0 + timedelta(seconds=30)
    assert (await catalog.reserve("k", "bob", now=T0 + timedelta(seconds=1), ttl=30)).owner == "alice"
    renewed = await catalog.reserve("k", "alice", now=T0 + timedelta(seconds=2), ttl=30)
    assert renewed.owner == "alice" and renewed.expires_at == T0 + timedelta(seconds=32)
    await catalog.release("k", "bob")  # not bob's: nothing happens
    assert (await catalog.reserve("k", "bob", now=T0 + timedelta(seconds=3), ttl=30)).owner == "alice"
    await catalog.release("k", "alice")
    assert (await catalog.reserve("k", "bob", now=T0 + timedelta(seconds=4), ttl=30)).owner == "bob"


async def test_an_expired_owner_is_taken_over_and_heartbeats_prevent_it(catalog: Catalog) -> None:
    await catalog.reserve("dead", "crashed", now=T0, ttl=5)
    await catalog.reserve("alive", "worker", now=T0, ttl=5)
    assert (
        await catalog.heartbeat([("alive", "worker"), ("dead", "someone-else")], now=T0 + timedelta(seconds=4), ttl=5)
        == 1
    )
    later = T0 + timedelta(seconds=6)
    assert (await catalog.reserve("dead", "rescuer", now=later, ttl=5)).owner == "rescuer"
    assert (await catalog.reserve("alive", "rescuer", now=later, ttl=5)).owner == "worker"
    # the old owner's heartbeat no longer extends what it lost
    assert await catalog.heartbeat([("dead", "crashed")], now=later, ttl=5) == 0


async def test_concurrent_reservations_grant_one_owner(catalog: Catalog) -> None:
    owners = [f"o{n}" for n in range(8)]
    results: dict[str, str] = {}

    async def take(owner: str) -> None:
        results[owner] = (await catalog.reserve("race", owner, now=T0, ttl=30)).owner

    async with anyio.create_task_group() as group:
        for owner in owners:
            group.start_soon(take, owner)
    winners = set(results.values())
    assert len(winners) == 1 and winners <= set(owners)


# --- named artifacts and lineage -------------------------------------------------------------------


async def test_published_artifacts_are_queried_by_name_and_partitions(catalog: Catalog) -> None:
    jan = await catalog.put(draft(key("jan")), now=T0)
    feb = await catalog.put(draft(key("feb")), now=T0 + timedelta(seconds=1))
    feb_eu = await catalog.put(draft(key("feb-eu")), now=T0 + timedelta(seconds=2))
    await catalog.publish(jan.id, "features", {"month": "01", "region": "us"}, now=T0)
    await catalog.publish(feb.id, "features", {"month": "02", "region": "us"}, now=T0 + timedelta(seconds=1))
    await catalog.publish(feb_eu.id, "features", {"month": "02", "region": "eu"}, now=T0 + timedelta(seconds=2))
    assert [a.id for a in await catalog.query("features")] == [feb_eu.id]
    assert [a.id for a in await catalog.query("features", latest=False)] == [feb_eu.id, feb.id, jan.id]
    assert [a.id for a in await catalog.query("features", {"month": "02"}, latest=False)] == [feb_eu.id, feb.id]
    us = await catalog.query("features", {"region": "us"})
    assert [a.id for a in us] == [feb.id] and us[0].tags == ["features"]
    assert us[0].partitions == {"month": "02", "region": "us"}
    assert await catalog.query("features", {"month": "03"}) == []
    assert await catalog.query("nothing") == []
    assert (await catalog.get(jan.id)).partitions == {"month": "01", "region": "us"}  # type: ignore[union-attr]


async def test_queries_of_named_artifacts_stay_in_their_project(catalog: Catalog) -> None:
    mine = await catalog.put(draft(key("p1")), now=T0)
    theirs_key = CacheKey("other", "production", "train", "1", "sig", "p1")
    theirs = await catalog.put(draft(theirs_key), now=T0 + timedelta(seconds=1))
    for artifact in (mine, theirs):
        await catalog.publish(artifact.id, "features", {"region": "eu"}, now=T0)
    assert [a.id for a in await catalog.query("features", latest=False)] == [theirs.id, mine.id]
    assert [a.id for a in await catalog.query("features", project="proj")] == [mine.id]
    assert [a.id for a in await catalog.query("features", {"region": "eu"}, project="other")] == [theirs.id]
    assert [a.id for a in await catalog.query("features", project="other", domain="production")] == [theirs.id]
    assert await catalog.query("features", project="other", domain="development") == []
    assert await catalog.query("features", project="nobody") == []


async def test_lineage_edges_are_kept_once(catalog: Catalog) -> None:
    edges = [
        LineageEdge("a1", "out", "e1", "load", 1),
        LineageEdge("a1", "in", "e1", "train", 1),
        LineageEdge("a2", "out", "e1", "train", 1),
    ]
    await catalog.record_lineage(edges)
    await catalog.record_lineage(edges[:1])
    assert await catalog.edges(artifact="a1") == [edges[0], edges[1]]
    assert len(await catalog.edges(execution_id="e1")) == 3
    assert await catalog.edges(execution_id=uuid.uuid4().hex) == []


async def test_start_and_close_are_idempotent(catalog: Catalog) -> None:
    await catalog.start()
    await catalog.put(draft(key()), now=T0)
    await catalog.close()
    await catalog.close()
    await catalog.start()
    assert await catalog.lookup(key(), now=T0) is not None
