"""The executions projection as every event store keeps it: what an append changes, list filters,
and list cursors; and the checks on durable reader cursors.

Pure functions of values, shared by the SQL stores and the in-memory one (``engine.testing``), so
that all of them plan the projection, validate filters and encode cursors the same way (a cursor
from one backend is valid in another). Part of the floor: it imports only ``engine.interfaces``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import get_args

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
    "ProjectionChange",
    "check_reader_cursor",
    "decode_cursor",
    "encode_cursor",
    "from_micros",
    "normalize_statuses",
    "page_of",
    "plan_projection",
    "to_micros",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUSES: frozenset[str] = frozenset(get_args(ExecutionStatus))


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
    An empty batch checks and changes nothing.

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


def check_reader_cursor(name: str, seq: int) -> None:
    """Validate the arguments of `EventStore.write_cursor`.

    Raises:
        ValueError: an empty ``name`` or a negative ``seq``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a durable cursor needs a non-empty name, got {name!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"durable cursor {name!r}: seq must be an int >= 0 (a read_all position), got {seq!r}")
