"""Slipstream: typed tasks and workflows, run by an event-sourced control loop.

Importing ``engine`` must stay fast and must not import Ray, asyncpg or nats: every public name is
loaded on first use through the module ``__getattr__`` below (DESIGN section 2).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AccessDenied",
    "ArtifactNotFound",
    "ArtifactQuery",
    "AttemptLogs",
    "BlobNotFound",
    "BlobStoreUnavailable",
    "BrokerUnavailable",
    "CompileError",
    "ConcurrencyConflict",
    "ConfigError",
    "CorruptBlob",
    "CorruptEvent",
    "Dir",
    "Engine",
    "ExecutionAborted",
    "ExecutionDetails",
    "ExecutionHandle",
    "ExecutionList",
    "ExecutionNotFinished",
    "ExecutionNotFound",
    "ExecutionSummary",
    "File",
    "InputLimitExceeded",
    "InvalidBlobAddress",
    "InvalidExecutionId",
    "InvalidResources",
    "InvalidScope",
    "InvalidTransition",
    "MissingFile",
    "NoTaskContext",
    "NodeDetails",
    "NodeNotFound",
    "OutputsNotReady",
    "Promise",
    "Resources",
    "ScopedCatalog",
    "SlipstreamError",
    "StoreUnavailable",
    "TaskContext",
    "TaskFailed",
    "TypeMismatch",
    "UnknownInput",
    "current_context",
    "dynamic",
    "from_literal",
    "map_task",
    "task",
    "to_literal",
    "workflow",
]

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "AccessDenied": "engine.errors",
    "ArtifactNotFound": "engine.errors",
    "ArtifactQuery": "engine._artifacts",
    "BlobNotFound": "engine.errors",
    "BlobStoreUnavailable": "engine.errors",
    "BrokerUnavailable": "engine.errors",
    "CorruptBlob": "engine.errors",
    "CorruptEvent": "engine.errors",
    "InvalidBlobAddress": "engine.errors",
    "CompileError": "engine.errors",
    "ConcurrencyConflict": "engine.errors",
    "ConfigError": "engine.errors",
    "ExecutionAborted": "engine.errors",
    "ExecutionNotFinished": "engine.errors",
    "ExecutionNotFound": "engine.errors",
    "InvalidResources": "engine.errors",
    "InvalidScope": "engine.errors",
    "InvalidExecutionId": "engine.errors",
    "InputLimitExceeded": "engine.errors",
    "InvalidTransition": "engine.errors",
    "MissingFile": "engine.errors",
    "NoTaskContext": "engine.errors",
    "NodeNotFound": "engine.errors",
    "OutputsNotReady": "engine.errors",
    "SlipstreamError": "engine.errors",
    "StoreUnavailable": "engine.errors",
    "TaskFailed": "engine.errors",
    "TypeMismatch": "engine.errors",
    "UnknownInput": "engine.errors",
    "Resources": "engine.models",
    "File": "engine._files",
    "Dir": "engine._files",
    "to_literal": "engine._literals",
    "from_literal": "engine._literals",
    "task": "engine._task",
    "dynamic": "engine._task",
    "map_task": "engine._map",
    "Promise": "engine._promise",
    "workflow": "engine._workflow",
    "TaskContext": "engine._context",
    "current_context": "engine._context",
    "Engine": "engine._engine",
    "ExecutionList": "engine._engine",
    "ExecutionHandle": "engine._engine",
    "AttemptLogs": "engine._logs",
    "ExecutionDetails": "engine._details",
    "NodeDetails": "engine._details",
    "ExecutionSummary": "engine.interfaces",
    "ScopedCatalog": "engine._scoped_catalog",
}

if TYPE_CHECKING:
    from engine._artifacts import ArtifactQuery
    from engine._context import TaskContext, current_context
    from engine._details import ExecutionDetails, NodeDetails
    from engine._engine import Engine, ExecutionHandle, ExecutionList
    from engine._files import Dir, File
    from engine._literals import from_literal, to_literal
    from engine._logs import AttemptLogs
    from engine._map import map_task
    from engine._promise import Promise
    from engine._scoped_catalog import ScopedCatalog
    from engine._task import dynamic, task
    from engine._workflow import workflow
    from engine.errors import (
        AccessDenied,
        ArtifactNotFound,
        BlobNotFound,
        BlobStoreUnavailable,
        BrokerUnavailable,
        CompileError,
        ConcurrencyConflict,
        ConfigError,
        CorruptBlob,
        CorruptEvent,
        ExecutionAborted,
        ExecutionNotFinished,
        ExecutionNotFound,
        InputLimitExceeded,
        InvalidBlobAddress,
        InvalidExecutionId,
        InvalidResources,
        InvalidScope,
        InvalidTransition,
        MissingFile,
        NodeNotFound,
        NoTaskContext,
        OutputsNotReady,
        SlipstreamError,
        StoreUnavailable,
        TaskFailed,
        TypeMismatch,
        UnknownInput,
    )
    from engine.interfaces import ExecutionSummary
    from engine.models import Resources


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
