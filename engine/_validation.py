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
    ArrayNode,
    Binding,
    DictBinding,
    InputBinding,
    ListBinding,
    LiteralBinding,
    OutputRef,
    SubworkflowNode,
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
    problem = _spec_problem(spec, spec.name or "<unnamed>", depth=0)
    if problem is not None:
        raise CompileError(
            f"workflow spec {spec.name or '<unnamed>'!r} is malformed: {problem}; launch a workflow compiled "
            "with @workflow (a spec built by hand or changed after compiling is refused before anything is written)"
        )


_MAX_SPEC_DEPTH = 100  # nested subworkflows


def _spec_problem(spec: WorkflowSpec, where: str, depth: int) -> str | None:
    if depth > _MAX_SPEC_DEPTH:
        return f"{where}: subworkflows nested more than {_MAX_SPEC_DEPTH} deep"
    if not spec.name:
        return f"{where}: the spec has no name"
    inputs = {typed.name for typed in spec.inputs}
    if len(inputs) != len(spec.inputs):
        return f"{where}: an input is declared twice"
    if unknown := sorted(set(spec.defaults) - inputs):
        return f"{where}: defaults for unknown input(s) {unknown}"
    outputs: dict[str, set[str]] = {}  # node id -> its output names, in order of appearance
    for node in spec.nodes:
        if not node.id or "/" in node.id:
            return f"{where}: node id {node.id!r} is empty or holds '/'"
        if node.id in outputs:
            return f"{where}: two nodes have the id {node.id!r}"
        for name, binding in node.inputs.items():
            problem = _binding_problem(binding, inputs, outputs)
            if problem is not None:
                return f"{where}: node {node.id!r} input {name!r} {problem}"
        if isinstance(node, SubworkflowNode):
            if node.workflow not in spec.subworkflows:
                return f"{where}: node {node.id!r} runs subworkflow {node.workflow!r}, which the spec does not hold"
        else:
            options = node.options
            if options.retries < 0 or options.system_retries < 0:
                return f"{where}: node {node.id!r} has a negative retry count"
            if options.timeout is not None and not options.timeout > 0:
                return f"{where}: node {node.id!r} has timeout {options.timeout!r}; it must be above 0"
        if isinstance(node, ArrayNode):
            if unknown := sorted(set(node.mapped) - set(node.inputs)):
                return f"{where}: map node {node.id!r} maps input(s) {unknown} it does not bind"
            if not 0 <= node.min_success_ratio <= 1 or (node.concurrency is not None and node.concurrency < 1):
                return f"{where}: map node {node.id!r} has min_success_ratio or concurrency out of range"
        outputs[node.id] = {typed.name for typed in node.interface_outputs}
    declared = {typed.name for typed in spec.outputs}
    if set(spec.output_bindings) != declared:
        return f"{where}: outputs {sorted(declared)} are bound as {sorted(spec.output_bindings)}"
    for name, binding in spec.output_bindings.items():
        problem = _binding_problem(binding, inputs, outputs)
        if problem is not None:
            return f"{where}: output {name!r} {problem}"
    for key, sub in spec.subworkflows.items():
        problem = _spec_problem(sub, f"{where} > subworkflow {key!r}", depth + 1)
        if problem is not None:
            return problem
    return None


def _binding_problem(binding: Binding, inputs: set[str], outputs: dict[str, set[str]]) -> str | None:
    stack: list[Binding] = [binding]
    while stack:
        current = stack.pop()
        match current:
            case OutputRef(node=node, output=output):
                if node not in outputs:
                    return f"takes an output of node {node!r}, which is not an earlier node of its scope"
                if output not in outputs[node]:
                    return f"takes output {output!r} of node {node!r}, which has {sorted(outputs[node])}"
            case InputBinding(name=name):
                if name not in inputs:
                    return f"takes workflow input {name!r}, which is not declared"
            case ListBinding(items=items):
                stack.extend(items)
            case DictBinding(items=items):
                stack.extend(items.values())
            case LiteralBinding():
                pass
            case _:
                return f"has a binding of unknown kind {type(current).__name__}"
    return None
