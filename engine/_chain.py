"""The checksum chain that makes each execution's event log tamper-evident (DESIGN section 5).

Every stored event carries ``checksum = sha256(previous || version, attempt, kind, node_id ||
payload)``, where ``previous`` is the checksum of the execution's event before it, or, for
version 1, a seed made from the execution id. Changing any stored byte of an event (its payload,
kind, node or attempt), removing one or reordering them breaks the chain at that event or at the
next; reads check it (`verify_chain`) and raise `CorruptEvent`.

Events written before the chain existed (schema version 4 and older) have no checksum: they are
*unchained legacy* events, accepted only as a prefix of an execution's log (the first event
written after the upgrade chains from the seed again). A missing checksum after a chained event
is corruption: it is how a chained event replaced by a forged one would look.

The chain detects changes made behind Slipstream's back; someone who can write the table and
recompute every later checksum can forge it, which is why the checksum of an execution's last
event (``slipstream executions verify --json`` prints it) is worth keeping elsewhere.

Pure functions of values, shared by every event store; part of the floor (it imports only
``engine.errors`` and ``engine.events``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Protocol

import msgspec

from engine.errors import CorruptEvent
from engine.events import AnyEvent, decode_event

__all__ = ["ChainRecord", "chain_checksums", "chain_seed", "decode_record", "event_checksum", "verify_chain"]

_SEED_PREFIX = b"slipstream/event-chain/v1\x00"
_HEADER = struct.Struct(">qqII")  # version, attempt, len(kind), len(node_id)


class ChainRecord(Protocol):
    """A stored event as the chain sees it (`engine.interfaces.StoredEvent` is one)."""

    @property
    def version(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def checksum(self) -> bytes | None: ...


def chain_seed(execution_id: str) -> bytes:
    """What version 1 of ``execution_id`` (or its first chained event) chains from."""
    return hashlib.sha256(_SEED_PREFIX + execution_id.encode()).digest()


def event_checksum(previous: bytes, version: int, kind: str, node_id: str, attempt: int, payload: bytes) -> bytes:
    """The checksum of one event, chained to ``previous`` (the checksum before it, or the seed)."""
    kind_bytes = kind.encode()
    node_bytes = node_id.encode()
    header = _HEADER.pack(version, attempt, len(kind_bytes), len(node_bytes))
    return hashlib.sha256(b"".join((previous, header, kind_bytes, node_bytes, payload))).digest()


def chain_checksums(execution_id: str, previous: bytes | None, records: Sequence[ChainRecord]) -> list[bytes]:
    """The checksums of ``records`` (consecutive events of ``execution_id``) appended after an event
    whose stored checksum is ``previous`` (``None``: they start the log, or follow legacy events)."""
    current = chain_seed(execution_id) if previous is None else previous
    out: list[bytes] = []
    for r in records:
        current = event_checksum(current, r.version, r.kind, r.node_id, r.attempt, r.payload)
        out.append(current)
    return out


def verify_chain(execution_id: str, records: Sequence[ChainRecord], after: int = 0) -> list[AnyEvent]:
    """Check and decode the stored events of ``execution_id`` with version > ``after``.

    Args:
        execution_id: whose events they are.
        records: the stored events in version order; when ``after`` > 0 the first one is the
            event at version ``after`` (the anchor the next one chains from), not returned.
        after: the version the read starts after.

    Returns:
        The decoded events with version > ``after``.

    Raises:
        CorruptEvent: a version is missing, a checksum does not chain, a chained event is followed
            by one without checksum, or a payload does not decode to the event its row describes.
    """
    if not records:
        return []
    previous_version, previous_checksum, chained = 0, None, False
    start = 0
    if after > 0:
        anchor = records[0]
        if anchor.version != after:
            raise CorruptEvent(
                execution_id, after, f"the event is missing (the next one stored is version {anchor.version})"
            )
        previous_version, previous_checksum, chained, start = after, anchor.checksum, anchor.checksum is not None, 1
    events: list[AnyEvent] = []
    for index in range(start, len(records)):
        record = records[index]
        version = record.version
        if version != previous_version + 1:
            raise CorruptEvent(
                execution_id, previous_version + 1, f"the event is missing (the next one stored is version {version})"
            )
        checksum = record.checksum
        if checksum is None:
            if chained:
                raise CorruptEvent(
                    execution_id,
                    version,
                    "it has no checksum, though the event before it has one (a chained event was replaced)",
                )
        else:
            actual = event_checksum(
                previous_checksum if chained else chain_seed(execution_id),  # type: ignore[arg-type]
                version,
                record.kind,
                record.node_id,
                record.attempt,
                record.payload,
            )
            if actual != checksum:
                raise CorruptEvent(
                    execution_id,
                    version,
                    "its checksum does not match its contents: the payload, kind, node or attempt was changed "
                    "after it was written, or the checksum of the event before it was",
                )
            chained = True
        events.append(decode_record(execution_id, record))
        previous_version, previous_checksum = version, checksum
    return events


def decode_record(execution_id: str, record: ChainRecord) -> AnyEvent:
    """Decode one stored event, checking that it is the event its row says it is.

    Raises:
        CorruptEvent: the payload does not decode, or names another execution, version, kind,
            node or attempt than its row.
    """
    try:
        event = decode_event(record.payload)
    except msgspec.DecodeError as exc:  # ValidationError too (a subclass): an unknown kind, a wrong field
        raise CorruptEvent(
            execution_id,
            record.version,
            f"its {record.kind} payload ({len(record.payload)} bytes) does not decode ({exc}); if a newer "
            "Slipstream wrote it, upgrade this one",
        ) from None
    if (
        event.version != record.version
        or event.execution_id != execution_id
        or event.node_id != record.node_id
        or event.attempt != record.attempt
        or type(event).__name__ != record.kind
    ):
        found = (event.execution_id, event.version, type(event).__name__, event.node_id, event.attempt)
        stored = (execution_id, record.version, record.kind, record.node_id, record.attempt)
        raise CorruptEvent(
            execution_id,
            record.version,
            f"its payload is a {found[2]} of execution {found[0]!r} v{found[1]} (node {found[3]!r}, attempt "
            f"{found[4]}), but its row says {stored[2]} of {stored[0]!r} v{stored[1]} (node {stored[3]!r}, "
            f"attempt {stored[4]})",
        )
    return event
