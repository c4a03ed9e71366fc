"""Execution leases on one machine: ``flock`` on lock files beside the SQLite event log.

A lease is an exclusive ``flock`` on one of a fixed set of bucket files, held by an open file
description: the kernel drops it when the process dies, so a crashed engine never blocks an
execution. Executions hash into buckets so the directory stays bounded; two executions sharing a
bucket are simply owned by the same process (never by two).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["BUCKETS", "FileLeases", "bucket_of"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; one engine per state directory there
    fcntl = None  # type: ignore[assignment]

BUCKETS = 4096


def bucket_of(name: str, buckets: int = BUCKETS) -> int:
    """The lease bucket of ``name`` among ``buckets`` (the Postgres store's leases hash the same way)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % buckets


class FileLeases:
    """Leases on executions, shared by every process that opens the same directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._held: dict[int, tuple[int, set[str]]] = {}  # bucket -> (fd, executions held through it)
        self._bucket_of: dict[str, int] = {}

    def claim(self, execution_id: str) -> bool:
        """Hold ``execution_id``'s lease; False if another store instance holds its bucket."""
        if execution_id in self._bucket_of:
            return True
        bucket = bucket_of(execution_id)
        held = self._held.get(bucket)
        if held is None:
            fd = self._lock(bucket)
            if fd is None:
                return False
            held = self._held[bucket] = (fd, set())
        held[1].add(execution_id)
        self._bucket_of[execution_id] = bucket
        return True

    def release(self, execution_id: str) -> None:
        """Drop ``execution_id``'s lease; the bucket file unlocks when none of its executions is held."""
        bucket = self._bucket_of.pop(execution_id, None)
        if bucket is None:
            return
        fd, executions = self._held[bucket]
        executions.discard(execution_id)
        if not executions:
            del self._held[bucket]
            os.close(fd)  # closing the description releases the flock

    def release_all(self) -> None:
        """Drop every lease (on close)."""
        for fd, _ in self._held.values():
            os.close(fd)
        self._held.clear()
        self._bucket_of.clear()

    def _lock(self, bucket: int) -> int | None:
        self._directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._directory / f"{bucket:04x}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd
