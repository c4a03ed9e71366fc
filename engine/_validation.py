"""What `Engine` refuses before anything is written: project and domain names, execution ids,
inputs too large or nested too deep, and workflow specs that do not hold together (DESIGN
section 12: bad input is a typed error that names the rule, and never reaches the log)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import CompileError, InputLimitExceeded, InvalidExecutionId, InvalidScope
from engine.models import (
    WorkflowSpec,
)

__all__ = [
    "DOMAINS",
    "MAX_INPUT_BYTES",
    "MAX_INPUT_DEPTH",
    "check_execution_id",
    "check_input_depth",
    "check_input_sizes",
    "check_scope",
    "check_spec",
]

DOMAINS = ("development", "staging", "production")
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


MAX_INPUT_BYTES = 128 * 1024 * 1024
MAX_INPUT_DEPTH = 100
_EXECUTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def check_execution_id(execution_id: str) -> None:
    """Raise `InvalidExecutionId` for what no execution can be named, before any store sees it."""
    if not isinstance(execution_id, str) or not _EXECUTION_ID.fullmatch(execution_id):
        raise InvalidExecutionId(execution_id if isinstance(execution_id, str) else repr(execution_id))


def check_input_depth(inputs: Mapping[str, Any], limit: int) -> None:
    """Raise `InputLimitExceeded` for an input nested deeper than ``limit`` (or holding itself).

    Walks containers without recursion, so that a value too deep for the codec is refused with
    a message instead of a `RecursionError`.
    """
    containers = (list, tuple, set, frozenset, dict)
    for name, value in inputs.items():
        stack: list[tuple[Any, int, tuple[int, ...]]] = [(value, 1, ())] if isinstance(value, containers) else []
        while stack:
            item, depth, parents = stack.pop()
            if depth > limit:
                raise InputLimitExceeded(
                    f"input {name!r} is nested more than {limit} levels deep, the limit "
                    "(Engine(max_input_depth=...)): flatten it or pass it as a File"
                )
            if id(item) in parents:
                raise InputLimitExceeded(f"input {name!r} contains itself; pass a value without cycles")
            children = item.values() if isinstance(item, dict) else item
            if not any(issubclass(kind, containers) for kind in set(map(type, children))):
                continue  # leaves only (the common case of a long list of numbers or strings): no walk
            inner = (*parents, id(item))
            stack.extend((child, depth + 1, inner) for child in children if isinstance(child, containers))


def check_input_sizes(literals: Mapping[str, bytes], limit: int) -> None:
    """Raise `InputLimitExceeded` for an encoded input larger than ``limit`` bytes."""
    for name, literal in literals.items():
        if len(literal) > limit:
            raise InputLimitExceeded(
                f"input {name!r} is {len(literal) / 2**20:.1f} MiB encoded; the limit is {limit / 2**20:.0f} MiB "
                "(Engine(max_input_bytes=...)): pass large data as a File or Dir"
            )


def check_scope(project: str, domain: str, domains: Sequence[str]) -> None:
    """Raise `InvalidScope` unless ``project`` is a name and ``domain`` one of ``domains``."""
    if not isinstance(project, str) or not _PROJECT.fullmatch(project):
        raise InvalidScope(
            f"project {project!r} is not a name: use 1 to 63 letters, digits, '-' and '_', starting with a "
            "letter or digit"
        )
    if domain not in domains:
        # an abbreviation ('prod', 'dev': a prefix of 3 characters or more, so that 'e' suggests
        # nothing) or a misspelling ('prodution')
        asked = str(domain)
        close = [d for d in domains if len(asked) >= 3 and d.startswith(asked)][:1] or difflib.get_close_matches(
            asked, domains, n=1
        )
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InvalidScope(f"domain {domain!r} is not one of {', '.join(domains)}{hint}")


def check_spec(spec: WorkflowSpec) -> None:
    """Raise `CompileError` for a workflow spec that does not hold together: what `@workflow`
    never builds, but a spec made by hand, decoded from elsewhere or changed after compiling may
    hold (a binding to a node that does not exist or comes later, an unknown input or output,
    two nodes with one id, a missing subworkflow, options out of range).

    Checked at launch, before ``ExecutionCreated``: the planner trusts the spec it reads back.
    """
    problem = spec.problem()
    if problem is not None:
        raise CompileError(
            f"workflow spec {spec.name or '<unnamed>'!r} is malformed: {problem}; launch a workflow compiled "
            "with @workflow (a spec built by hand or changed after compiling is refused before anything is written)"
        )
