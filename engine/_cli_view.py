"""What the ``slipstream`` CLI shows: progress views, tables and one-line summaries.

Everything here is a pure function of values (execution details, summaries, events, and a ``now``
where a duration is shown); ``engine._cli`` does the I/O. rich is imported by the caller's first use
of this module, never by ``slipstream --help``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Group, RenderableType
from rich.pretty import Pretty
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from engine._details import ExecutionDetails, NodeDetails
    from engine.events import AnyEvent
    from engine.interfaces import ExecutionSummary

__all__ = [
    "details_table",
    "elapsed",
    "event_json",
    "event_line",
    "event_payload",
    "executions_table",
    "format_duration",
    "history_table",
    "node_counts",
    "node_lines",
    "node_time",
    "outputs_renderable",
    "progress_view",
    "status_line",
    "top_level_nodes",
    "values_lines",
]

_STATUS_STYLE = {
    "created": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "aborted": "yellow",
    "quarantined": "bold red",  # its event log is corrupt: the loop stopped running it
    "waiting": "dim",
    "queued": "blue",
    "retrying": "yellow",
    "skipped": "dim",
    "cancelled": "yellow",
}
_ELEMENT = re.compile(r"/\d+$")


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _local(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def elapsed(details: ExecutionDetails, now: datetime) -> float:
    """Seconds from the execution's creation to its end (or ``now``)."""
    # from creation, not start: the clock then never jumps back when the loop picks the execution up
    end = details.finished_at or now
    return max(0.0, (end - details.created_at).total_seconds())


def _styled(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _first_line(text: str, width: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def top_level_nodes(details: ExecutionDetails) -> list[NodeDetails]:
    """The nodes without the elements of map nodes (those are shown as a map node's progress)."""
    maps = {node.node_id for node in details.nodes if node.size is not None}
    return [
        node for node in details.nodes if not (_ELEMENT.search(node.node_id) and node.node_id.rsplit("/", 1)[0] in maps)
    ]


def node_counts(details: ExecutionDetails) -> dict[str, int]:
    """Nodes (map elements left out) that are done, running, queued, failed and waiting."""
    counts = {"done": 0, "running": 0, "queued": 0, "failed": 0, "waiting": 0}
    for node in top_level_nodes(details):
        if node.phase in ("succeeded", "skipped", "cancelled"):
            counts["done"] += 1
        elif node.phase in ("running", "retrying"):
            counts["running"] += 1
        elif node.phase == "queued":
            counts["queued"] += 1
        elif node.phase == "failed":
            counts["failed"] += 1
        else:
            counts["waiting"] += 1
    return counts


def _map_progress(node: NodeDetails) -> str:
    size = node.size or 0
    text = f"{node.succeeded + node.failed}/{size}"
    extra = [
        f"{n} {what}"
        for n, what in (
            (node.failed, "failed"),
            (node.running, "running"),
            (node.queued, "queued"),
            (node.retrying, "retrying"),
            (node.cancelled, "cancelled"),
        )
        if n
    ]
    return text + (f" ({', '.join(extra)})" if extra else "")


def node_time(node: NodeDetails, now: datetime) -> str:
    """How long the node ran (or runs), or how long it has been queued."""
    if node.started_at is not None:
        return format_duration(max(0.0, ((node.finished_at or now) - node.started_at).total_seconds()))
    if node.phase == "queued" and node.queued_at is not None:
        return f"queued {format_duration(max(0.0, (now - node.queued_at).total_seconds()))}"
    return ""


NODE_ROWS_SHOWN = 20  # past this, nodes that are done or waiting are counted instead of listed
_BUSY = ("running", "queued", "retrying", "failed")


def _rows_shown(nodes: list[NodeDetails]) -> tuple[list[NodeDetails], int]:
    """At most `NODE_ROWS_SHOWN` rows: busy nodes and maps first, then the latest of the rest."""
    if len(nodes) <= NODE_ROWS_SHOWN:
        return nodes, 0
    busy = [i for i, node in enumerate(nodes) if node.phase in _BUSY or node.size is not None][:NODE_ROWS_SHOWN]
    others = [i for i in range(len(nodes)) if i not in set(busy)]
    room = NODE_ROWS_SHOWN - len(busy)
    keep = sorted(busy + (others[-room:] if room else []))
    return [nodes[i] for i in keep], len(nodes) - len(keep)


def progress_view(details: ExecutionDetails, now: datetime) -> RenderableType:
    """The live view of ``slipstream run`` and ``executions watch``: a header, then a row per node
    (task, phase, attempt, time, retries, and a bar for a map)."""
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("execution", details.execution_id)
    header.add_row("workflow", details.workflow)
    header.add_row("status", _styled(details.status))
    header.add_row("elapsed", format_duration(elapsed(details, now)))
    counts = node_counts(details)
    header.add_row(
        "nodes",
        Text.assemble(
            (f"{counts['done']} done", "green"),
            " · ",
            (f"{counts['running']} running", "cyan"),
            " · ",
            (f"{counts['queued']} queued", "blue"),
            " · ",
            (f"{counts['failed']} failed", "red" if counts["failed"] else ""),
            " · ",
            (f"{counts['waiting']} waiting", "dim"),
        ),
    )
    nodes, hidden = _rows_shown(top_level_nodes(details))
    if not nodes:
        return header
    rows = []
    for node in nodes:
        if node.size is not None:
            done = node.succeeded + node.failed if node.size else 1
            bar = ProgressBar(total=max(node.size, 1), completed=done, width=20)
            grid = Table.grid(padding=(0, 1))
            grid.add_row(bar, Text(_map_progress(node)))
            progress: RenderableType = grid
        elif node.phase == "failed" and node.error is not None:
            progress = Text(_first_line(node.error.message, 60), style="red")
        else:
            progress = Text("")
        attempt = str(node.attempt) if node.attempt else ""
        retries = str(node.retries) if node.retries else ""
        rows.append((node.node_id, node.task, node.phase, attempt, node_time(node, now), retries, progress))
    table = Table(box=None, padding=(0, 2), show_edge=False)
    for i, column in enumerate(("node", "task", "phase", "attempt", "time", "retries")):
        # the text columns keep their width; the progress column takes what is left, wrapping
        widest = max(len(column), *(len(row[i]) for row in rows))  # type: ignore[arg-type]
        table.add_column(column, style="bold" if column == "node" else None, no_wrap=True, min_width=widest)
    table.add_column("progress")
    for node_id, task_name, phase, attempt, time, retries, progress in rows:
        styled_retries = Text(retries, style="yellow") if retries else ""
        table.add_row(node_id, task_name, _styled(phase), attempt, time, styled_retries, progress)
    parts: list[RenderableType] = [header, Text(""), table]
    if hidden:
        parts.append(Text(f"... and {hidden} more nodes done or waiting", style="dim"))
    return Group(*parts)


def status_line(details: ExecutionDetails, now: datetime) -> str:
    """One plain line for the execution's status (non-TTY progress)."""
    counts = node_counts(details)
    return (
        f"[{format_duration(elapsed(details, now))}] execution {details.execution_id} ({details.workflow}): "
        f"{details.status}; nodes {counts['done']} done, {counts['running']} running, {counts['queued']} queued, "
        f"{counts['failed']} failed"
    )


def node_lines(before: ExecutionDetails | None, after: ExecutionDetails) -> list[str]:
    """Plain lines for the nodes whose phase changed between two looks (map elements left out)."""
    old = {node.node_id: node.phase for node in top_level_nodes(before)} if before else {}
    lines = []
    for node in top_level_nodes(after):
        if old.get(node.node_id, "waiting") != node.phase:
            suffix = f" [{_map_progress(node)}]" if node.size is not None else ""
            error = f": {_first_line(node.error.message)}" if node.error and node.phase == "failed" else ""
            lines.append(f"  node {node.node_id}: {node.phase}{suffix}{error}")
    return lines


def executions_table(summaries: Sequence[ExecutionSummary]) -> Table:
    """``slipstream executions list``."""
    table = Table(box=None, header_style="bold")
    for column in ("id", "workflow", "status", "project", "domain", "created"):
        table.add_column(column, no_wrap=True)
    for summary in summaries:
        table.add_row(
            summary.execution_id,
            summary.workflow,
            _styled(summary.status),
            summary.project,
            summary.domain,
            _local(summary.created_at),
        )
    return table


VALUE_CHARS_SHOWN = 300  # per line; `--json` gives values whole


def values_lines(values: dict[str, object]) -> list[str]:
    """``inputs: ...`` and ``outputs: ...`` lines, each cut to fit a screen."""
    lines = []
    for name, value in values.items():
        text = repr(value)
        if len(text) > VALUE_CHARS_SHOWN:
            text = f"{text[:VALUE_CHARS_SHOWN]}... ({len(text)} characters; --json for all)"
        lines.append(f"{name}: {text}")
    return lines


def details_table(details: ExecutionDetails, now: datetime) -> RenderableType:
    """``slipstream executions show``: the summary, then one row per node."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("execution", details.execution_id)
    head.add_row("workflow", details.workflow)
    head.add_row("status", _styled(details.status))
    head.add_row("project/domain", f"{details.project}/{details.domain}")
    head.add_row("created", _local(details.created_at))
    head.add_row("started", _local(details.started_at))
    head.add_row("finished", _local(details.finished_at))
    head.add_row("elapsed", format_duration(elapsed(details, now)))
    if details.parent:
        head.add_row("recovers", details.parent)
    if details.error:
        where = f"node {details.error.node_id}: " if details.error.node_id else ""
        head.add_row("error", Text(f"{where}{_first_line(details.error.message, 200)}", style="red"))
    nodes = Table(box=None, header_style="bold")
    for column in ("node", "phase", "attempt", "progress", "error"):
        nodes.add_column(column)
    for node in top_level_nodes(details):
        nodes.add_row(
            node.node_id,
            _styled(node.phase),
            str(node.attempt),
            _map_progress(node) if node.size is not None else "",
            Text(_first_line(node.error.message), style="red") if node.error else "",
        )
    # a map's failed elements carry the errors worth reading (the first few; the rest are counted)
    for node in details.nodes:
        for index, error in node.failed_elements.items():
            nodes.add_row(
                f"{node.node_id}/{index}",
                _styled("failed"),
                "",
                "",
                Text(_first_line(error.message), style="red"),
            )
    return Group(head, Text(""), nodes)


_ENVELOPE = ("execution_id", "version", "at", "node_id", "attempt", "kind")


def _short(value: Any) -> str:
    if isinstance(value, dict) and value and all(isinstance(v, bytes) for v in value.values()):
        from engine._outputs import plain_value

        value = {name: plain_value(literal) for name, literal in value.items()}  # the values, not msgpack
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


_LITERAL_FIELDS = ("inputs", "outputs")


def event_json(event: AnyEvent) -> dict[str, Any]:
    """An event as JSON-ready values, with its inputs and outputs as plain values (not msgpack)."""
    from engine._outputs import plain_value
    from engine.events import encode_event_json

    data: dict[str, Any] = msgspec.json.decode(encode_event_json(event))
    for name in _LITERAL_FIELDS:
        literals = getattr(event, name, None)
        if isinstance(literals, dict) and literals and name in data:
            data[name] = {key: plain_value(literal) for key, literal in literals.items()}
    results = getattr(event, "results", None)
    if results and "results" in data:
        for shown, result in zip(data["results"], results, strict=True):
            if isinstance(shown, dict) and result.output is not None:
                shown["output"] = plain_value(result.output)
            elif isinstance(shown, list) and result.output is not None:  # array-like results
                shown[2] = plain_value(result.output)
    return data


def event_payload(event: AnyEvent) -> str:
    """A short, one-line rendering of what an event carries besides its envelope."""
    from engine import events

    match event:
        case events.ExecutionCreated():
            parent = f" recovers={event.parent}" if event.parent else ""
            return (
                f"workflow={event.workflow} project={event.project} domain={event.domain} "
                f"inputs={_short(event.inputs)}{parent}"
            )
        case events.ExecutionFailed() | events.NodeFailed():
            where = f"{event.error.node_id}: " if isinstance(event, events.ExecutionFailed) else ""
            return f"{event.error.kind} error: {where}{_first_line(event.error.message, 60)}"
        case events.DynamicExpanded():
            return f"{len(event.spec.nodes)} node(s)"
        case events.ChunkQueued():
            retries = sum(1 for attempt in event.attempts if attempt > 1)
            again = f" ({retries} retried)" if retries else ""
            return f"{len(event.elements)} element(s) {_ranges(event.elements)}{again}"
        case events.ChunkFinished() | events.ElementsReused():
            failed = [r.index for r in event.results if r.error is not None]
            source = f" from {event.source}" if isinstance(event, events.ElementsReused) else ""
            bad = f", {len(failed)} failed {_ranges(failed)}" if failed else ""
            return f"{len(event.results) - len(failed)} succeeded{bad}{source}"
        case _:
            fields = msgspec.structs.asdict(event)
            return " ".join(
                f"{k}={_short(v)}" for k, v in fields.items() if k not in _ENVELOPE and v not in ("", [], {})
            )


def _ranges(indexes: Sequence[int], shown: int = 4) -> str:
    """``[0-99, 120, 130-140 ...]``: element indexes, runs collapsed."""
    runs: list[str] = []
    ordered = sorted(indexes)
    start = previous = ordered[0] if ordered else 0
    for index in [*ordered[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    more = f" +{len(runs) - shown} more" if len(runs) > shown else ""
    return "[" + ", ".join(runs[:shown]) + more + "]" if ordered else "[]"


def event_line(event: AnyEvent) -> str:
    """One line per event for ``slipstream events tail``: time, execution, version, kind, node, payload."""
    kind = type(event).__name__
    node = f" node={event.node_id}#{event.attempt}" if event.node_id else ""
    payload = event_payload(event)
    at = event.at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{at} {event.execution_id} v{event.version} {kind}{node}" + (f" {payload}" if payload else "")


def _kind_style(kind: str) -> str:
    for word, status in (("Failed", "failed"), ("Succeeded", "succeeded"), ("Aborted", "aborted")):
        if word in kind:
            return _STATUS_STYLE[status]
    return ""


def history_table(history: Sequence[AnyEvent]) -> Table:
    """``slipstream executions history``."""
    table = Table(box=None, header_style="bold")
    for column in ("version", "at", "kind", "node", "attempt", "payload"):
        table.add_column(column, no_wrap=column != "payload")
    for event in history:
        kind = type(event).__name__
        table.add_row(
            str(event.version),
            event.at.astimezone().strftime("%H:%M:%S.%f")[:-3],
            Text(kind, style=_kind_style(kind)),
            event.node_id,
            str(event.attempt) if event.node_id else "",
            Text(event_payload(event)),
        )
    return table


def outputs_renderable(value: Any) -> RenderableType:
    """A workflow's outputs, readably: ``name = value`` per field of a named tuple, else the value."""
    if value is None:
        return Text("(no outputs)", style="dim")
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_column()
        for name in value._fields:
            grid.add_row(name, "=", Pretty(getattr(value, name)))
        return grid
    return Pretty(value)
