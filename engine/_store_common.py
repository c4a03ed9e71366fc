"""Pieces the SQL event stores share: versioned migrations.

The projection plan, list filters and list cursors live in the floor module `engine._projection`
(the in-memory store uses them too); they are re-exported here for the SQL stores' convenience.
Pure functions only; no driver is imported here, so the SQLite store never pulls in asyncpg.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Literal

import msgspec

from engine._projection import (
    ProjectionChange,
    decode_cursor,
    encode_cursor,
    from_micros,
    normalize_statuses,
    page_of,
    plan_projection,
    to_micros,
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
