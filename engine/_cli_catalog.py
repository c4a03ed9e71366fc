"""What ``slipstream catalog ...`` prints: artifact tables and details, and lineage as a tree (pure).

Values are shown without the tasks' code: literals decode to plain values, references to the blob
store and pickled objects are named, not read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from engine.interfaces import Artifact, Lineage

__all__ = ["artifact_json", "artifact_lines", "artifacts_table", "lineage_json", "lineage_lines", "plain_literal"]

_EXT_NAMES = {1: "pickled object", 2: "blob reference", 3: "list in the blob store", 4: "item in the blob store"}


def plain_literal(literal: bytes) -> Any:
    """A literal as plain values; extensions are named (no user code, no blob read)."""

    def ext_hook(code: int, data: memoryview) -> Any:
        return f"<{_EXT_NAMES.get(code, f'extension {code}')}, {len(data)} bytes>"

    try:
        return msgspec.msgpack.decode(literal, ext_hook=ext_hook)
    except msgspec.DecodeError:
        return f"<{len(literal)} undecodable bytes>"


def artifact_json(artifact: Artifact) -> dict[str, Any]:
    """An artifact as JSON-ready builtins, its outputs as plain values."""
    data = msgspec.to_builtins(artifact)
    data["outputs"] = {name: plain_literal(value) for name, value in artifact.outputs.items()}
    return data


def artifacts_table(artifacts: list[Artifact]) -> Any:
    """A rich table of artifacts, newest first."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("ARTIFACT", "TASK", "VERSION", "PRODUCED BY", "CREATED", "NAMES"):
        table.add_column(column)
    for artifact in artifacts:
        table.add_row(
            artifact.id[:12],
            artifact.dataset.name,
            artifact.dataset.version or "-",
            f"{artifact.execution_id}/{artifact.node_id}#{artifact.attempt}",
            _time(artifact.created_at),
            _names(artifact) or "-",
        )
    return table


def artifact_lines(artifact: Artifact) -> list[str]:
    """An artifact's details, one fact per line."""
    dataset = artifact.dataset
    lines = [
        f"artifact    {artifact.id}",
        f"task        {dataset.name} (cache_version {dataset.version or '-'}, interface {dataset.interface[:12]})",
        f"scope       {dataset.project}/{dataset.domain}",
        f"produced by {artifact.execution_id} node {artifact.node_id} attempt {artifact.attempt}",
        f"created     {_time(artifact.created_at)}",
        f"cache key   {artifact.key}",
        f"inputs hash {artifact.input_hash}",
    ]
    if artifact.tags:
        lines.append(f"names       {_names(artifact)}")
    lines.append("outputs")
    for name, literal in sorted(artifact.outputs.items()):
        lines.append(f"  {name} = {_short(plain_literal(literal))}")
    if not artifact.outputs:
        lines.append("  (none)")
    return lines


def lineage_json(lineage: Lineage, artifacts: dict[str, Artifact | None]) -> dict[str, Any]:
    """A lineage graph as JSON-ready builtins, with each artifact's task."""
    data = msgspec.to_builtins(lineage)
    data["artifacts"] = {
        artifact_id: None if found is None else {"task": found.dataset.name, "node_id": found.node_id}
        for artifact_id, found in artifacts.items()
    }
    return data


def lineage_lines(lineage: Lineage, artifacts: dict[str, Artifact | None]) -> list[str]:
    """A lineage graph as an indented tree from its root: upstream, each artifact's children are
    what it was made from; downstream, what was made from it. An artifact reached twice is shown
    once in full and then marked ``(see above)``."""
    children: dict[str, list[tuple[str, str]]] = {}
    for link in lineage.links:
        parent, child = (link.target, link.source) if lineage.direction == "upstream" else (link.source, link.target)
        via = f"{link.node_id}#{link.attempt} in {link.execution_id}"
        children.setdefault(parent, []).append((child, via))
    verb = "made from" if lineage.direction == "upstream" else "used by"
    lines = [_label(lineage.root, artifacts)]
    shown = {lineage.root}

    def walk(parent: str, prefix: str) -> None:
        kids = sorted(set(children.get(parent, [])))
        for position, (child, via) in enumerate(kids):
            last = position == len(kids) - 1
            branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
            seen = child in shown
            lines.append(f"{prefix}{branch}{verb} {_label(child, artifacts)} via {via}{' (see above)' if seen else ''}")
            if not seen:
                shown.add(child)
                walk(child, prefix + indent)

    walk(lineage.root, "")
    if len(lines) == 1:
        lines.append(f"(nothing {verb} it was recorded)")
    return lines


def _label(artifact_id: str, artifacts: dict[str, Artifact | None]) -> str:
    found = artifacts.get(artifact_id)
    if found is None:
        return f"{artifact_id[:12]} (evicted)"
    return f"{artifact_id[:12]} {found.dataset.name.rsplit('.', 1)[-1]}"


def _names(artifact: Artifact) -> str:
    parts = ", ".join(f"{k}={v}" for k, v in sorted(artifact.partitions.items()))
    return ", ".join(artifact.tags) + (f" [{parts}]" if parts else "")


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
