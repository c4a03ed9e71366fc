"""What the SQL catalogs share: the queries, the row mapping and the migrations (DESIGN section 9).

`SqlCatalog` implements the `Catalog` contract on a minimal transaction interface (`Tx`); the SQLite
and Postgres backends only open connections, translate driver errors and convert timestamps. The
SQL is written once with ``?`` placeholders (rewritten to ``$n`` for Postgres): both dialects share
``INSERT ... ON CONFLICT``, which makes reservations atomic.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Literal, Protocol

import msgspec

from engine.interfaces import Artifact, ArtifactDraft, CacheKey, Catalog, Dataset, LineageEdge, Reservation

__all__ = ["CatalogMigration", "SqlCatalog", "Tx", "load_catalog_migrations", "split_statements"]

_outputs_encoder = msgspec.msgpack.Encoder(order="deterministic")
_outputs_decoder = msgspec.msgpack.Decoder(dict[str, bytes])
_LOOKUP_BATCH = 400  # keys per query: with their datasets, below SQLite's old 999-parameter limit
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SQLITE_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sqlite\.sql$")


class CatalogMigration(msgspec.Struct, frozen=True):
    """One versioned schema migration file from ``catalog/migrations``."""

    version: int
    name: str
    sql: str


def load_catalog_migrations(dialect: Literal["postgres", "sqlite"]) -> list[CatalogMigration]:
    """The catalog's migrations of one dialect, in version order (``NNNN_name.sql`` for Postgres,
    ``NNNN_name.sqlite.sql`` for SQLite)."""
    pattern = _SQLITE_MIGRATION_NAME if dialect == "sqlite" else _MIGRATION_NAME
    found: dict[int, CatalogMigration] = {}
    for entry in resources.files("catalog").joinpath("migrations").iterdir():
        match = pattern.match(entry.name)
        if match is not None:
            version = int(match.group(1))
            if version in found:
                raise RuntimeError(f"two {dialect} catalog migrations have version {version}: renumber one")
            found[version] = CatalogMigration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def split_statements(sql: str) -> list[str]:
    """The statements of a migration file (no semicolons inside literals in our files)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class Tx(Protocol):
    """One transaction (or autocommit connection) of a backend; ``?`` placeholders."""

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row of arguments, in one call to the driver."""
        ...


_ARTIFACT_COLUMNS = (
    "a.id, a.cache_key, a.input_hash, a.outputs, a.execution_id, a.node_id, a.attempt, a.created_at, "
    "d.project, d.domain, d.name, d.version, d.interface"
)
_ARTIFACT_FROM = "catalog_artifacts a JOIN catalog_datasets d ON d.id = a.dataset_id"


def _artifact_row(draft: ArtifactDraft, dataset_id: str, digest: str, at: Any) -> tuple[Any, ...]:
    outputs = _outputs_encoder.encode(draft.outputs)
    artifact_id = ArtifactDraft.id_for(digest, draft.execution_id, draft.node_id, draft.attempt)
    return (artifact_id, dataset_id, digest, draft.key.inputs, outputs, draft.execution_id, draft.node_id,
            draft.attempt, at)  # fmt: skip


class SqlCatalog(Catalog):
    """The `Catalog` contract in SQL; subclasses provide transactions and timestamp conversion."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction: committed on exit, rolled back on error."""

    @abc.abstractmethod
    def to_db_time(self, at: datetime) -> Any:
        """A timestamp as the backend stores it."""

    @abc.abstractmethod
    def from_db_time(self, value: Any) -> datetime:
        """A stored timestamp as an aware UTC datetime."""

    # -- cache -------------------------------------------------------------------------------------

    async def lookup_many(
        self, keys: Sequence[CacheKey], *, now: datetime, max_age: float | None = None
    ) -> list[Artifact | None]:
        digests = [key.digest for key in keys]
        # An artifact answers a key only from the key's own dataset (project, domain, task, version,
        # interface): a digest is just a column, which a tenant can write under a dataset of its own
        # project, and a match on it alone would hand that row to another project's lookups.
        datasets = {digest: key.dataset for digest, key in zip(digests, keys, strict=True)}
        since = self.to_db_time(now - timedelta(seconds=max_age)) if max_age is not None else None
        newest: dict[str, Artifact] = {}
        async with self.transaction() as tx:
            unique = list(datasets)
            for start in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[start : start + _LOOKUP_BATCH]
                dataset_ids = list({datasets[digest].id for digest in batch})
                sql = (
                    f"SELECT {_ARTIFACT_COLUMNS} FROM {_ARTIFACT_FROM} "
                    f"WHERE a.cache_key IN ({', '.join('?' for _ in batch)}) "
                    f"AND a.dataset_id IN ({', '.join('?' for _ in dataset_ids)})"
                )
                args: list[Any] = [*batch, *dataset_ids]
                if since is not None:
                    sql += " AND a.created_at >= ?"
                    args.append(since)
                for row in await tx.fetch(sql, *args):
                    artifact = self._artifact(row)
                    if artifact.dataset != datasets[artifact.key]:  # another requested key's dataset
                        continue
                    held = newest.get(artifact.key)
                    if held is None or (artifact.created_at, artifact.id) > (held.created_at, held.id):
                        newest[artifact.key] = artifact
            if newest:
                await self._attach_names(tx, list(newest.values()), newest)
        return [newest.get(digest) for digest in digests]

    async def put_many(self, drafts: Sequence[ArtifactDraft], *, now: datetime) -> list[Artifact]:
        at = self.to_db_time(now)
        # one hash per key and per dataset: a map records thousands of drafts of one dataset
        dataset_ids = {dataset: dataset.id for dataset in {draft.key.dataset for draft in drafts}}
        digests = [draft.key.digest for draft in drafts]
        async with self.transaction() as tx:
            for dataset, dataset_id in dataset_ids.items():
                await tx.execute(
                    "INSERT INTO catalog_datasets (id, project, domain, name, version, interface, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    dataset_id, dataset.project, dataset.domain, dataset.name, dataset.version, dataset.interface, at,
                )  # fmt: skip
            await tx.execute_many(
                "INSERT INTO catalog_artifacts (id, dataset_id, cache_key, input_hash, outputs, execution_id, "
                "node_id, attempt, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [
                    _artifact_row(draft, dataset_ids[draft.key.dataset], digest, at)
                    for draft, digest in zip(drafts, digests, strict=True)
                ],
            )
            ids = [
                ArtifactDraft.id_for(d, x.execution_id, x.node_id, x.attempt)
                for d, x in zip(digests, drafts, strict=True)
            ]
            found = await self._by_ids(tx, ids)
        return [found[artifact_id] for artifact_id in ids]

    async def get(self, artifact_id: str) -> Artifact | None:
        async with self.transaction() as tx:
            if len(artifact_id) >= 32:
                return (await self._by_ids(tx, [artifact_id])).get(artifact_id)
            if len(artifact_id) < 8:
                return None
            rows = await tx.fetch(
                f"SELECT {_ARTIFACT_COLUMNS} FROM {_ARTIFACT_FROM} WHERE a.id >= ? AND a.id < ? LIMIT 2",
                artifact_id, artifact_id + "~",
            )  # fmt: skip
            if len(rows) != 1:
                return None
            artifact = self._artifact(rows[0])
            return (await self._attach_names(tx, [artifact]))[0]

    async def list_artifacts(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        task: str | None = None,
        limit: int = 100,
    ) -> list[Artifact]:
        where, args = [], []
        for column, value in (("d.project", project), ("d.domain", domain), ("d.name", task)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        async with self.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT {_ARTIFACT_COLUMNS} FROM {_ARTIFACT_FROM}{clause} ORDER BY a.created_at DESC, a.id LIMIT ?",
                *args, limit,
            )  # fmt: skip
            return await self._attach_names(tx, [self._artifact(row) for row in rows])

    async def evict(self, *, artifact_id: str | None = None, task: str | None = None) -> int:
        if (artifact_id is None) == (task is None):
            raise ValueError("evict takes exactly one of artifact_id= and task=")
        async with self.transaction() as tx:
            if artifact_id is not None:
                ids = [artifact_id]
            else:
                rows = await tx.fetch(
                    "SELECT a.id FROM catalog_artifacts a JOIN catalog_datasets d ON d.id = a.dataset_id "
                    "WHERE d.name = ?",
                    task,
                )
                ids = [row[0] for row in rows]
            removed = 0
            for start in range(0, len(ids), _LOOKUP_BATCH):
                batch = ids[start : start + _LOOKUP_BATCH]
                marks = ", ".join("?" for _ in batch)
                removed += await tx.execute(f"DELETE FROM catalog_artifacts WHERE id IN ({marks})", *batch)
                await tx.execute(f"DELETE FROM catalog_tags WHERE artifact_id IN ({marks})", *batch)
                await tx.execute(f"DELETE FROM catalog_partitions WHERE artifact_id IN ({marks})", *batch)
        return removed

    # -- reservations --------------------------------------------------------------------------------

    async def reserve(self, key: str, owner: str, *, now: datetime, ttl: float) -> Reservation:
        until = self.to_db_time(now + timedelta(seconds=ttl))
        async with self.transaction() as tx:
            # one statement: the database decides between two owners racing for the key
            await tx.execute(
                "INSERT INTO catalog_reservations (cache_key, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (cache_key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE catalog_reservations.owner = excluded.owner OR catalog_reservations.expires_at <= ?",
                key, owner, until, self.to_db_time(now),
            )  # fmt: skip
            rows = await tx.fetch("SELECT owner, expires_at FROM catalog_reservations WHERE cache_key = ?", key)
        holder, expires_at = rows[0]
        return Reservation(key, holder, self.from_db_time(expires_at))

    async def heartbeat(self, held: Sequence[tuple[str, str]], *, now: datetime, ttl: float) -> int:
        until = self.to_db_time(now + timedelta(seconds=ttl))
        extended = 0
        async with self.transaction() as tx:
            for key, owner in held:
                extended += await tx.execute(
                    "UPDATE catalog_reservations SET expires_at = ? WHERE cache_key = ? AND owner = ?",
                    until, key, owner,
                )  # fmt: skip
        return extended

    async def release(self, key: str, owner: str) -> None:
        async with self.transaction() as tx:
            await tx.execute("DELETE FROM catalog_reservations WHERE cache_key = ? AND owner = ?", key, owner)

    # -- named artifacts -----------------------------------------------------------------------------

    async def publish(self, artifact_id: str, name: str, partitions: Mapping[str, str], *, now: datetime) -> None:
        if not name:
            raise ValueError("an artifact's name must not be empty")
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO catalog_tags (artifact_id, name, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (artifact_id, name) DO NOTHING",
                artifact_id, name, self.to_db_time(now),
            )  # fmt: skip
            for key, value in partitions.items():
                await tx.execute(
                    "INSERT INTO catalog_partitions (artifact_id, name, key, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (artifact_id, name, key) DO UPDATE SET value = excluded.value",
                    artifact_id, name, str(key), str(value),
                )  # fmt: skip

    async def query(
        self,
        name: str,
        partitions: Mapping[str, str] | None = None,
        *,
        latest: bool = True,
        project: str | None = None,
        domain: str | None = None,
    ) -> list[Artifact]:
        sql = (
            f"SELECT {_ARTIFACT_COLUMNS} FROM {_ARTIFACT_FROM} JOIN catalog_tags t ON t.artifact_id = a.id "
            "WHERE t.name = ?"
        )
        args: list[Any] = [name]
        for column, value in (("d.project", project), ("d.domain", domain)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        for key, value in (partitions or {}).items():
            sql += (
                " AND EXISTS (SELECT 1 FROM catalog_partitions p WHERE p.artifact_id = a.id AND p.name = t.name "
                "AND p.key = ? AND p.value = ?)"
            )
            args += [str(key), str(value)]
        sql += " ORDER BY t.created_at DESC, a.created_at DESC, a.id DESC"
        if latest:
            sql += " LIMIT 1"
        async with self.transaction() as tx:
            rows = await tx.fetch(sql, *args)
            return await self._attach_names(tx, [self._artifact(row) for row in rows])

    # -- lineage -------------------------------------------------------------------------------------

    async def record_lineage(self, edges: Sequence[LineageEdge]) -> None:
        async with self.transaction() as tx:
            await tx.execute_many(
                "INSERT INTO catalog_lineage (artifact_id, direction, execution_id, node_id, attempt) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(e.artifact, e.direction, e.execution_id, e.node_id, e.attempt) for e in edges],
            )

    async def edges(
        self, *, artifact: str | None = None, execution_id: str | None = None, node_id: str | None = None
    ) -> list[LineageEdge]:
        if artifact is not None:
            where, args = "artifact_id = ?", [artifact]
        elif execution_id is not None:
            where, args = "execution_id = ?", [execution_id]
            if node_id is not None:
                where += " AND node_id = ?"
                args.append(node_id)
        else:
            raise ValueError("edges takes artifact= or execution_id=")
        async with self.transaction() as tx:
            rows = await tx.fetch(
                "SELECT artifact_id, direction, execution_id, node_id, attempt FROM catalog_lineage "
                f"WHERE {where} ORDER BY execution_id, node_id, attempt, direction, artifact_id",
                *args,
            )
        return [LineageEdge(row[0], row[1], row[2], row[3], int(row[4])) for row in rows]

    # -- rows ----------------------------------------------------------------------------------------

    def _artifact(self, row: Sequence[Any]) -> Artifact:
        return Artifact(
            id=row[0],
            key=row[1],
            input_hash=row[2],
            outputs=_outputs_decoder.decode(bytes(row[3])),
            execution_id=row[4],
            node_id=row[5],
            attempt=int(row[6]),
            created_at=self.from_db_time(row[7]),
            dataset=Dataset(row[8], row[9], row[10], row[11], row[12]),
        )

    async def _by_ids(self, tx: Tx, ids: Sequence[str]) -> dict[str, Artifact]:
        found: dict[str, Artifact] = {}
        for start in range(0, len(ids), _LOOKUP_BATCH):
            batch = list(dict.fromkeys(ids[start : start + _LOOKUP_BATCH]))
            marks = ", ".join("?" for _ in batch)
            rows = await tx.fetch(f"SELECT {_ARTIFACT_COLUMNS} FROM {_ARTIFACT_FROM} WHERE a.id IN ({marks})", *batch)
            for row in rows:
                artifact = self._artifact(row)
                found[artifact.id] = artifact
        attached = await self._attach_names(tx, list(found.values()))
        return {artifact.id: artifact for artifact in attached}

    async def _attach_names(
        self, tx: Tx, artifacts: list[Artifact], index: dict[str, Artifact] | None = None
    ) -> list[Artifact]:
        """The artifacts with their published names (tags) and partitions; ``index`` (by key) is
        updated in place when given."""
        if not artifacts:
            return artifacts
        ids = list(dict.fromkeys(a.id for a in artifacts))
        tags: dict[str, list[str]] = {}
        parts: dict[str, dict[str, str]] = {}
        for start in range(0, len(ids), _LOOKUP_BATCH):
            batch = ids[start : start + _LOOKUP_BATCH]
            marks = ", ".join("?" for _ in batch)
            for artifact_id, name in await tx.fetch(
                f"SELECT artifact_id, name FROM catalog_tags WHERE artifact_id IN ({marks}) ORDER BY name", *batch
            ):
                tags.setdefault(artifact_id, []).append(name)
            for artifact_id, key, value in await tx.fetch(
                f"SELECT artifact_id, key, value FROM catalog_partitions WHERE artifact_id IN ({marks}) ORDER BY key",
                *batch,
            ):
                parts.setdefault(artifact_id, {})[key] = value
        if not tags and not parts:
            return artifacts
        result = [
            msgspec.structs.replace(a, tags=tags.get(a.id, []), partitions=parts.get(a.id, {}))
            if a.id in tags or a.id in parts
            else a
            for a in artifacts
        ]
        if index is not None:
            for artifact in result:
                index[artifact.key] = artifact
        return result
