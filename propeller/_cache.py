"""The cache step before a node launches, and the records after it succeeds (pure; DESIGN 6 and 9).

Like flytepropeller's ``CheckCatalogCache``: a node whose task has ``cache=True`` does not launch
when it becomes ready; the round asks the catalog (`CacheLookup`) and the node stays ready until the
answer comes back as an observation. A hit records ``NodeCacheHit`` (a map's hits, one
``ElementsReused`` per batch) and nothing runs; a miss launches as usual, and the outputs of the
attempt that succeeds are recorded (`CachePut`). With ``cache_serialize`` the lookup also reserves
the key for the node: a node whose key another execution holds waits, and asks again after
``PlannerConfig.cache_wait``, until the holder's outputs arrive (a hit) or its reservation lapses
(then it takes the key over).

Everything here is pure: the I/O is in `propeller._catalog_actions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import msgspec

from engine.events import ElementResult, ElementsReused, NodeCacheHit
from engine.interfaces import ArtifactDraft, CacheKey, TaskKey
from engine.literals import NIL_LITERAL, combine_hashes, inputs_hash, literal_hash
from engine.models import ArrayNode, InputBinding, OutputRef, TaskOptions
from engine.state import WAITING, ArrayState, NodeState, binding_leaves
from propeller._actions import CacheLookup, CachePut, CacheRelease, Publication
from propeller._round import Round

__all__ = ["element_keys", "map_lookup", "owner_of", "ready_to_launch", "record_elements", "record_outputs"]

_REUSED_PER_EVENT = 10_000  # cached elements per ElementsReused event


def _cached(rnd: Round, node: NodeState) -> bool:
    return rnd.config.caching and node.options.cache


def _key(rnd: Round, node: NodeState, inputs_digest: str) -> CacheKey:
    options: TaskOptions = node.options
    task = getattr(node.spec, "task", None)
    assert task is not None, f"node {node.node_id!r} names no task"
    return CacheKey(
        rnd.created.project,
        rnd.created.domain,
        f"{task.module}.{task.qualname}",
        options.cache_version,
        options.cache_interface,
        inputs_digest,
    )


def node_key(rnd: Round, node: NodeState) -> CacheKey:
    """The cache key of a task or dynamic node from its resolved inputs."""
    return _key(rnd, node, inputs_hash(rnd.state.node_inputs(node), node.options.cache_ignore_inputs))


def element_keys(rnd: Round, node: NodeState, array: ArrayState, indices: list[int]) -> list[CacheKey]:
    """The cache keys of map elements: the same as a task called with the element's inputs."""
    ignored = set(node.options.cache_ignore_inputs)
    broadcast = {name: literal_hash(value) for name, value in array.broadcast.items() if name not in ignored}
    mapped = {name: values for name, values in array.mapped.items() if name not in ignored}
    keys = []
    for index in indices:
        hashes = dict(broadcast)
        for name, values in mapped.items():
            hashes[name] = literal_hash(values[index])
        keys.append(_key(rnd, node, combine_hashes(hashes)))
    return keys


def owner_of(rnd: Round, node: NodeState) -> str:
    """Who a reservation names: this node of this execution (several in one engine compete)."""
    return f"{rnd.state.execution_id}/{node.node_id}"


def _ask(rnd: Round, node: NodeState, action: CacheLookup) -> None:
    if node.node_id in rnd.obs.cache_pending or node.node_id in rnd.looked_up:
        return  # asked already: wait for the answer
    rnd.looked_up.add(node.node_id)
    rnd.actions.append(action)


def ready_to_launch(rnd: Round, node: NodeState) -> bool:
    """The cache step of a ready task or dynamic node: True to launch it now; False when the
    catalog served it (``NodeCacheHit`` emitted) or the node waits for the catalog."""
    if not _cached(rnd, node):
        return True
    outcome = rnd.obs.cache.get(node.node_id)
    options = node.options
    if outcome is None:
        key = node_key(rnd, node)
        _ask(
            rnd,
            node,
            CacheLookup(
                rnd.state.execution_id,
                node.node_id,
                [key],
                max_age=options.cache_ttl,
                reserve=options.cache_serialize,
                owner=owner_of(rnd, node) if options.cache_serialize else "",
            ),
        )
        return False
    if outcome.error:
        return True  # the catalog is out of reach: computing is always correct
    hit = outcome.artifacts[0] if outcome.artifacts else None
    if hit is not None:
        rnd.emit(NodeCacheHit, node.node_id, node.attempt, artifact=hit.id, outputs=hit.outputs)
        return False
    if options.cache_serialize and outcome.holder != owner_of(rnd, node):
        # another execution computes this key: ask again later (its outputs, or its lapse)
        rnd.wake(rnd.now + timedelta(seconds=rnd.config.cache_wait))
        return False
    return True


def record_outputs(rnd: Round, node: NodeState, outputs: Mapping[str, bytes]) -> None:
    """A task or dynamic node succeeded by running: keep its outputs in the catalog when it is
    cached, and its lineage (the artifacts it consumed) whenever there is any."""
    if not rnd.config.caching:
        return
    consumed = consumed_artifacts(rnd, node)
    run = TaskKey(rnd.state.execution_id, node.node_id, node.attempt)
    options = node.options
    if not (options.cache or options.publish):
        if consumed:
            rnd.actions.append(CachePut([], consumed=consumed, run=run))
        return
    key = node_key(rnd, node)
    draft = ArtifactDraft(key, dict(outputs), rnd.state.execution_id, node.node_id, node.attempt)
    owners = [(key.digest, owner_of(rnd, node))] if options.cache and options.cache_serialize else []
    publish = None
    if options.publish:
        inputs = rnd.state.node_inputs(node)
        publish = Publication(options.publish, {name: _partition_value(inputs[name]) for name in options.partitions})
    rnd.actions.append(CachePut([draft], owners, consumed=consumed, run=run, publish=publish))


def _partition_value(literal: bytes) -> str:
    """A partition's value: the input's plain value as text (no user code, no blob read)."""
    try:
        value = msgspec.msgpack.decode(literal)
    except msgspec.DecodeError:
        return literal.hex()
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def consumed_artifacts(rnd: Round, node: NodeState) -> list[str]:
    """The catalog artifacts a node's inputs came from: the outputs of its upstream nodes that
    were cached (recorded when they ran, or reused from the cache)."""
    scope = node.scope
    if scope is None:
        return []
    found: set[str] = set()
    launched_with = rnd.created.artifacts if scope.owner is None else {}
    for binding in node.spec.inputs.values():
        for leaf in binding_leaves(binding):
            if isinstance(leaf, OutputRef):
                artifact = artifact_of(rnd, rnd.state.nodes.get(scope.prefix + leaf.node))
                if artifact is not None:
                    found.add(artifact)
            elif isinstance(leaf, InputBinding) and leaf.name in launched_with:  # resolved at launch
                found.add(launched_with[leaf.name])
    return sorted(found)


def artifact_of(rnd: Round, node: NodeState | None) -> str | None:
    """The artifact holding a succeeded node's outputs, if the catalog has one (pure: the id of
    an artifact recorded from a run derives from its key and attempt)."""
    if node is None or node.phase != "succeeded":
        return None
    if node.source.startswith("cache:"):
        return node.source.removeprefix("cache:")
    recorded = rnd.config.caching and (node.options.cache or bool(node.options.publish))
    if node.source or not recorded or node.scope is None or isinstance(node.spec, ArrayNode):
        return None
    key = node_key(rnd, node)
    return ArtifactDraft(key, {}, rnd.state.execution_id, node.node_id, node.attempt).artifact_id


def release_if_failed(rnd: Round, node: NodeState) -> None:
    """A node with ``cache_serialize`` failed for good: let the waiting executions compute."""
    if _cached(rnd, node) and node.options.cache_serialize and node.phase == "failed":
        rnd.actions.append(CacheRelease(node_key(rnd, node).digest, owner_of(rnd, node)))


def map_lookup(rnd: Round, node: NodeState, array: ArrayState) -> bool:
    """The cache step of an expanded map before its first chunk: True when its elements may go
    out (the catalog answered, hits were reused); False while it waits for the answer."""
    if not _cached(rnd, node) or array.chunks > 0:
        return True
    outcome = rnd.obs.cache.get(node.node_id)
    if outcome is None:
        indices = list(range(array.size))
        if not indices:
            return True
        if node.node_id in rnd.obs.cache_pending or node.node_id in rnd.looked_up:
            return False
        keys = element_keys(rnd, node, array, indices)
        _ask(
            rnd,
            node,
            CacheLookup(rnd.state.execution_id, node.node_id, keys, indices=indices, max_age=node.options.cache_ttl),
        )
        return False
    if outcome.error:
        return True
    hits = [
        (index, artifact)
        for index, artifact in zip(outcome.indices, outcome.artifacts, strict=True)
        if artifact is not None and array.phases[index] == WAITING  # not reused twice
    ]
    for start in range(0, len(hits), _REUSED_PER_EVENT):
        batch = hits[start : start + _REUSED_PER_EVENT]
        rnd.emit(
            ElementsReused,
            node.node_id,
            0,
            source="cache",
            results=[ElementResult(index, 0, artifact.outputs.get("o0")) for index, artifact in batch],
            artifacts=[artifact.id for _, artifact in batch],
        )
    return True


def record_elements(rnd: Round, node: NodeState, array: ArrayState, results: list[ElementResult]) -> None:
    """Map elements succeeded by running: keep each one's output in the catalog."""
    if not _cached(rnd, node):
        return
    done = [r for r in results if r.error is None]
    if not done:
        return
    keys = element_keys(rnd, node, array, [r.index for r in done])
    drafts = [
        ArtifactDraft(
            key,
            {} if r.output is None or r.output == NIL_LITERAL else {"o0": r.output},
            rnd.state.execution_id,
            f"{node.node_id}/{r.index}",
            r.attempt,
        )
        for key, r in zip(keys, done, strict=True)
    ]
    rnd.actions.append(CachePut(drafts))
