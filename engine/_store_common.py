"""Pieces the SQL event stores share: migrations, the projection plan, and list cursors.

Pure functions only; no driver is imported here, so the SQLite store never pulls in asyncpg.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Literal, get_args

import msgspec

from engine.interfaces import (
    ExecutionPage,
    ExecutionStatus,
    ExecutionSummary,
    StoredEvent,
    status_after,
    summary_fields,
)

__all__ = [
    "Migration",
    "ProjectionChange",
    "decode_cursor",
    "encode_cursor",
    "from_micros",
    "load_migrations",
    "normalize_statuses",
    "page_of",
    "plan_projection",
    "to_micros",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUSES: frozenset[str] = frozenset(get_args(ExecutionStatus))
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SQLITE_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sqlite\.sql$")


class Migration(msgspec.Struct, frozen=True):
    """One versioned schema migration file from ``engine/migrations``."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: Literal["postgres", "sqlite"]) -> list[Migration]:
    """The migrations of one SQL dialect, in version order.

    Postgres files are ``NNNN_name.sql``; SQLite files are ``NNNN_name.sqlite.sql`` (both match the
    ``migrations/*.sql`` package-data glob).

    Args:
        dialect: ``postgres`` or ``sqlite``.

    Returns:
        The migrations, sorted by version.

    Raises:
        RuntimeError: two files claim the same version (a packaging mistake).
    """
    pattern = _SQLITE_MIGRATION_NAME if dialect == "sqlite" else _MIGRATION_NAME
    found: dict[int, Migration] = {}
    for entry in resources.files("engine").joinpath("migrations").iterdir():
        match = pattern.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two {dialect} migrations have version {version}: renumber one of them")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def to_micros(at: datetime) -> int:
    """Microseconds since the Unix epoch (UTC); naive datetimes are taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime of ``to_micros``'s result."""
    return _EPOCH + timedelta(microseconds=micros)


def encode_cursor(created_at: datetime, execution_id: str) -> str:
    """An opaque keyset cursor for the row after which the next page starts."""
    raw = msgspec.json.encode([to_micros(created_at), execution_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Undo `encode_cursor`.

    Raises:
        ValueError: the cursor was not made by `encode_cursor` (pass back ``next_cursor`` unchanged).
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, execution_id = msgspec.json.decode(raw, type=tuple[int, str])
    except (ValueError, msgspec.DecodeError) as exc:
        raise ValueError(
            f"invalid list cursor {cursor!r}: pass back the next_cursor of a previous page unchanged"
        ) from exc
    return from_micros(micros), execution_id


def page_of(rows: list[ExecutionSummary], limit: int) -> ExecutionPage:
    """A page from a query that fetched ``limit + 1`` rows: the extra row only says a next page exists."""
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].execution_id) if len(rows) > limit else None
    return ExecutionPage(items=items, next_cursor=next_cursor)


def normalize_statuses(status: ExecutionStatus | Sequence[ExecutionStatus] | None) -> list[str] | None:
    """One status or several as a list (``None``: no filter).

    Raises:
        ValueError: an unknown status.
    """
    if status is None:
        return None
    statuses = [status] if isinstance(status, str) else list(status)
    unknown = [s for s in statuses if s not in _STATUSES]
    if unknown:
        raise ValueError(f"unknown execution status {unknown!r}: use one of {sorted(_STATUSES)}")
    return statuses


class ProjectionChange(msgspec.Struct):
    """How one execution's projection row changes in an append.

    ``created`` holds the fields of a new row (``expected_version == 0``); ``status`` is the new
    status, or ``None`` when no event of the batch changes it.
    """

    execution_id: str
    expected_version: int
    new_version: int
    status: ExecutionStatus | None
    created: dict[str, object] | None


def plan_projection(batches: Sequence[tuple[str, int, Sequence[StoredEvent]]]) -> list[ProjectionChange]:
    """The projection changes an append makes (pure).

    An execution whose first batch has no ``ExecutionCreated`` still gets a row (empty project,
    domain and workflow), because the row's version is what optimistic concurrency checks against.

    Raises:
        ValueError: the same execution appears twice in one call (append its events as one batch).
    """
    changes: list[ProjectionChange] = []
    seen: set[str] = set()
    for execution_id, expected, records in batches:
        if execution_id in seen:
            raise ValueError(
                f"execution {execution_id!r} appears twice in one append_many call: "
                "append all of its events in one batch"
            )
        seen.add(execution_id)
        if not records:
            continue
        status: ExecutionStatus | None = None
        created: dict[str, object] | None = None
        for record in records:
            if record.kind == "ExecutionCreated" and created is None and expected == 0:
                created = summary_fields(record)
            new_status = status_after(record.kind, status or "created")
            if new_status != (status or "created") or record.kind == "ExecutionCreated":
                status = new_status
        if expected == 0 and created is None:
            created = {"project": "", "domain": "", "workflow": "", "created_at": None, "parent": None}
        if expected == 0 and status is None:
            status = "created"
        changes.append(ProjectionChange(execution_id, expected, expected + len(records), status, created))
    return changes
