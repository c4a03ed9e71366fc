"""What a round asks the world to do once its events are durable: the `Action` union.

The planner returns actions; the controller carries them out, in order, through one dispatcher
(`propeller._attempts.Attempts.dispatch`) after the round's append. Every kind is idempotent, since
a round may be planned again after a crash:

- `Submit`: hand an attempt to an executor (idempotent per ``(execution, node, attempt)``).
- `Cancel`: stop an attempt the log no longer wants (unknown attempts are ignored; a cancel that
  fails is tried again at the next round).
- `Release`: the attempt's start is durable (``NodeRunning`` appended): its body may run. Executors
  whose workers share the engine's process wait for it, so that a task that kills the process is
  found on restart as a started attempt rather than submitted again forever.

- `CacheLookup`: ask the catalog for a node's (or a map's elements') cached outputs before it
  launches, and with ``reserve`` hold the key for this node while it computes (``cache_serialize``);
  the answer comes back to the next round as an observation (`propeller._cache.CacheOutcome`).
- `CachePut`: record outputs of succeeded attempts in the catalog (idempotent per attempt) and
  their lineage (what the attempt consumed and produced), and drop the reservations they held.
- `CacheRelease`: drop a reservation whose node ended without outputs.
"""

from __future__ import annotations

import msgspec

from engine.interfaces import Artifact, ArtifactDraft, CacheKey, TaskKey, TaskRequest

__all__ = [
    "Action",
    "CacheLookup",
    "CacheOutcome",
    "CachePut",
    "CacheRelease",
    "Cancel",
    "Publication",
    "Release",
    "Submit",
]


class Submit(msgspec.Struct, frozen=True):
    """Hand ``request`` to the executor named ``executor``."""

    request: TaskRequest
    executor: str


class Cancel(msgspec.Struct, frozen=True):
    """Stop the attempt ``key`` (``handle``: its durable id, when it started) and forget it."""

    key: TaskKey
    executor: str
    handle: str = ""


class Release(msgspec.Struct, frozen=True):
    """The start of attempt ``key`` is durable: let the executor run its body."""

    key: TaskKey
    executor: str


class CacheLookup(msgspec.Struct, frozen=True):
    """Find cached outputs of ``keys`` for the node ``node_id`` (one key for a task, one per
    element ``indices[i]`` for a map), no older than ``max_age`` seconds. With ``reserve`` (a task
    with ``cache_serialize``), on a miss hold the key for ``owner``."""

    execution_id: str
    node_id: str
    keys: list[CacheKey]
    indices: list[int] = []
    max_age: float | None = None
    reserve: bool = False
    owner: str = ""


class CacheOutcome(msgspec.Struct, frozen=True):
    """The catalog's answer to a `CacheLookup`, observed by the node's next round.

    ``artifacts[i]`` is the hit for ``keys[i]`` or None. With ``reserve`` and a miss, ``holder`` is
    the owner holding the key afterwards: the node computes when it is its own owner, else waits.
    ``error`` says the catalog could not answer: the node then runs without the cache.
    """

    artifacts: list[Artifact | None]
    indices: list[int] = []
    holder: str = ""
    error: str = ""


class Publication(msgspec.Struct, frozen=True):
    """Publish the recorded artifact as ``name`` with these partition values."""

    name: str
    partitions: dict[str, str] = {}


class CachePut(msgspec.Struct, frozen=True):
    """Record ``drafts`` in the catalog with their lineage (each draft was produced by its attempt,
    and the attempt ``run`` consumed the artifacts ``consumed``); then release each reservation in
    ``owners`` (key digest, owner) the producing attempts held."""

    drafts: list[ArtifactDraft]
    owners: list[tuple[str, str]] = []
    consumed: list[str] = []
    run: TaskKey | None = None
    publish: Publication | None = None  # of the one draft (a task's ``publish=`` option)


class CacheRelease(msgspec.Struct, frozen=True):
    """Drop the reservation of ``key`` held by ``owner`` (its node ended without outputs)."""

    key: str
    owner: str


Action = Submit | Cancel | Release | CacheLookup | CachePut | CacheRelease
