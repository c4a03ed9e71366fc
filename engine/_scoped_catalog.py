"""`ScopedCatalog`: what a scoped engine's ``catalog`` shows of the catalog (DESIGN 11).

An engine opened with ``project=`` (and ``domain=``) hands its users this view instead of the
catalog itself: artifacts of other projects are not found (``get`` returns None, listings and
queries leave them out, lineage edges through them are not shown), and writing into another
project is an `InvalidScope` error. Its own control loop and services keep the catalog itself
(cache keys already hold the project and domain, so lookups never cross projects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from engine.errors import InvalidScope
from engine.interfaces import Artifact, ArtifactDraft, CacheKey, Catalog, LineageEdge, Reservation

__all__ = ["ScopedCatalog"]


class ScopedCatalog(Catalog):
    """``catalog`` seen from ``project`` (and ``domain``, when not None).

    Args:
        catalog: the catalog itself (started and closed by its owner, not by this view).
        project, domain: the scope; None for either leaves it open.
    """

    def __init__(self, catalog: Catalog, project: str | None, domain: str | None) -> None:
        self.inner = catalog
        self.project = project
        self.domain = domain
        self.name = catalog.name

    def __repr__(self) -> str:
        return f"ScopedCatalog({self.inner!r}, project={self.project!r}, domain={self.domain!r})"

    def sees(self, artifact: Artifact | None) -> bool:
        """Whether ``artifact`` belongs to the scope."""
        if artifact is None:
            return False
        dataset = artifact.dataset
        return (self.project is None or dataset.project == self.project) and (
            self.domain is None or dataset.domain == self.domain
        )

    def _scoped(self, project: str | None, domain: str | None) -> tuple[str | None, str | None]:
        for asked, own, what in ((project, self.project, "project"), (domain, self.domain, "domain")):
            if own is not None and asked is not None and asked != own:
                raise InvalidScope(f"this catalog is scoped to {what} {own!r}; it cannot use {what} {asked!r}")
        return (project if project is not None else self.project), (domain if domain is not None else self.domain)

    def _check_key(self, key: CacheKey) -> None:
        self._scoped(key.project, key.domain)

    async def start(self) -> None:
        """Nothing: the engine starts the catalog itself."""

    async def close(self) -> None:
        """Nothing: the engine closes the catalog itself."""

    async def lookup_many(
        self, keys: Sequence[CacheKey], *, now: datetime, max_age: float | None = None
    ) -> list[Artifact | None]:
        found = await self.inner.lookup_many(keys, now=now, max_age=max_age)
        return [artifact if self.sees(artifact) else None for artifact in found]

    async def put_many(self, drafts: Sequence[ArtifactDraft], *, now: datetime) -> list[Artifact]:
        for each in drafts:
            self._check_key(each.key)
        return await self.inner.put_many(drafts, now=now)

    async def get(self, artifact_id: str) -> Artifact | None:
        found = await self.inner.get(artifact_id)
        return found if self.sees(found) else None

    async def list_artifacts(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        task: str | None = None,
        limit: int = 100,
    ) -> list[Artifact]:
        project, domain = self._scoped(project, domain)
        return await self.inner.list_artifacts(project=project, domain=domain, task=task, limit=limit)

    async def evict(self, *, artifact_id: str | None = None, task: str | None = None) -> int:
        if (artifact_id is None) == (task is None):
            raise ValueError("evict takes exactly one of artifact_id= and task=")
        if artifact_id is not None:
            return await self.inner.evict(artifact_id=artifact_id) if await self.get(artifact_id) else 0
        mine = await self.inner.list_artifacts(project=self.project, domain=self.domain, task=task, limit=2**31 - 1)
        return sum([await self.inner.evict(artifact_id=artifact.id) for artifact in mine])

    async def reserve(self, key: str, owner: str, *, now: datetime, ttl: float) -> Reservation:
        return await self.inner.reserve(key, owner, now=now, ttl=ttl)

    async def heartbeat(self, held: Sequence[tuple[str, str]], *, now: datetime, ttl: float) -> int:
        return await self.inner.heartbeat(held, now=now, ttl=ttl)

    async def release(self, key: str, owner: str) -> None:
        await self.inner.release(key, owner)

    async def publish(self, artifact_id: str, name: str, partitions: Mapping[str, str], *, now: datetime) -> None:
        if await self.get(artifact_id) is None:
            raise InvalidScope(
                f"artifact {artifact_id!r} is not in this catalog's scope (project {self.project!r}): "
                "publish artifacts of the scope's own executions"
            )
        await self.inner.publish(artifact_id, name, partitions, now=now)

    async def query(
        self,
        name: str,
        partitions: Mapping[str, str] | None = None,
        *,
        latest: bool = True,
        project: str | None = None,
        domain: str | None = None,
    ) -> list[Artifact]:
        project, domain = self._scoped(project, domain)
        return await self.inner.query(name, partitions, latest=latest, project=project, domain=domain)

    async def record_lineage(self, edges: Sequence[LineageEdge]) -> None:
        for artifact_id in {edge.artifact for edge in edges}:
            if await self.get(artifact_id) is None:
                raise InvalidScope(
                    f"artifact {artifact_id!r} is not in this catalog's scope (project {self.project!r}): record the "
                    "lineage of the scope's own artifacts"
                )
        await self.inner.record_lineage(edges)

    async def edges(
        self, *, artifact: str | None = None, execution_id: str | None = None, node_id: str | None = None
    ) -> list[LineageEdge]:
        found = await self.inner.edges(artifact=artifact, execution_id=execution_id, node_id=node_id)
        visible = {artifact_id: await self.get(artifact_id) is not None for artifact_id in {e.artifact for e in found}}
        return [edge for edge in found if visible[edge.artifact]]
