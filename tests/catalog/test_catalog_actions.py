"""The loop's side of the catalog (propeller/_catalog_actions.py) on a real SQLite catalog: answers to
lookups, reservations held and renewed or let go, records written in the background and visible to
this process's lookups at once, and a catalog that fails never failing the node."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from catalog import SqliteCatalog
from engine.interfaces import ArtifactDraft, CacheKey, TaskKey
from propeller import CacheLookup, CacheOutcome, CachePut
from propeller._catalog_actions import CatalogActions

NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = CacheKey("p", "d", "m.t", "1", "sig", "inputs")


def actions_on(catalog: SqliteCatalog, answers: list[tuple[str, str, CacheOutcome]]) -> CatalogActions:
    return CatalogActions(catalog, lambda e, n, o: answers.append((e, n, o)), lambda: NOW, reservation_ttl=10)


async def test_records_are_seen_at_once_and_written_in_the_background(tmp_path: Path) -> None:
    answers: list[tuple[str, str, CacheOutcome]] = []
    async with SqliteCatalog(tmp_path / "c.db") as catalog:
        actions = actions_on(catalog, answers)
        draft = ArtifactDraft(KEY, {"o0": b"\x01"}, "e1", "n", 1)
        await actions.carry_out(CachePut([draft], consumed=["up"], run=TaskKey("e1", "n", 1)))
        await actions.carry_out(CacheLookup("e2", "n", [KEY]))
        assert answers[-1][2].artifacts[0].id == draft.artifact_id  # type: ignore[union-attr]
        await actions.flush()
        assert (await catalog.lookup(KEY, now=NOW)).id == draft.artifact_id  # type: ignore[union-attr]
        assert {(e.artifact, e.direction) for e in await catalog.edges(execution_id="e1")} == {
            (draft.artifact_id, "out"),
            ("up", "in"),
        }


async def test_reservations_are_renewed_while_wanted_and_released_after(tmp_path: Path) -> None:
    answers: list[tuple[str, str, CacheOutcome]] = []
    async with SqliteCatalog(tmp_path / "c.db") as catalog:
        actions = actions_on(catalog, answers)
        await actions.carry_out(CacheLookup("e1", "n", [KEY], reserve=True, owner="e1/n"))
        assert answers[-1][2].holder == "e1/n" and (KEY.digest, "e1/n") in actions.held
        await actions.carry_out(CacheLookup("e2", "n", [KEY], reserve=True, owner="e2/n"))
        assert answers[-1][2].holder == "e1/n"  # e2 waits
        assert await actions.heartbeat(lambda execution, node: True) == 1
        assert await actions.heartbeat(lambda execution, node: False) == 0  # the node ended: let go
        assert not actions.held
        assert (await catalog.reserve(KEY.digest, "e2/n", now=NOW, ttl=10)).owner == "e2/n"


async def test_a_failing_catalog_answers_with_an_error(tmp_path: Path) -> None:
    answers: list[tuple[str, str, CacheOutcome]] = []
    catalog = SqliteCatalog(tmp_path / "c.db")  # never started: every call fails
    actions = actions_on(catalog, answers)
    await actions.carry_out(CacheLookup("e1", "n", [KEY]))
    assert answers[-1][2].error.startswith("RuntimeError") and answers[-1][2].artifacts == []
    await actions.carry_out(CachePut([ArtifactDraft(KEY, {}, "e1", "n", 1)]))
    await actions.flush()  # logged, not raised
