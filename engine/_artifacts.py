"""Named artifacts in the SDK: a workflow input that defaults to the newest artifact of a name.

``@workflow def report(features: list[str] = ArtifactQuery("features", {"region": "eu"}))``: the
input is resolved when an execution is launched (`Engine.launch` asks the catalog for the newest
artifact published as ``features`` with those partitions), and the artifact it took is recorded in
``ExecutionCreated.artifacts``. Tasks publish their outputs under a name with
``@task(publish="features", partitions=["region"])``.
"""

from __future__ import annotations

import msgspec

__all__ = ["ArtifactQuery"]


class ArtifactQuery(msgspec.Struct, frozen=True):
    """The newest artifact published as ``name`` whose partitions include ``partitions``.

    Attributes:
        name: the name tasks publish under (``@task(publish=name)``).
        partitions: partition values the artifact must have (all of them), e.g. ``{"month": "01"}``.
        output: which output of the producing task (default: its only one, ``o0``).
    """

    name: str
    partitions: dict[str, str] = {}
    output: str = "o0"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"ArtifactQuery needs a non-empty name, got {self.name!r}")
        msgspec.structs.force_setattr(self, "partitions", {str(k): str(v) for k, v in self.partitions.items()})

    def __repr__(self) -> str:
        parts = "".join(f", {k}={v!r}" for k, v in sorted(self.partitions.items()))
        return f"ArtifactQuery({self.name!r}{parts})"
