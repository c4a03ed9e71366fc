"""The one exception hierarchy of Slipstream.

    SlipstreamError
    ├── CompileError            a workflow or task definition is invalid
    │   ├── TypeMismatch        a value or producer output does not fit an input's type
    │   └── UnknownInput        an argument names no input of the interface
    ├── ConfigError             a setting or backend name is wrong
    │   ├── InvalidResources    a Resources(cpu=, mem=, gpu=) value is invalid (also a ValueError)
    │   └── InvalidBlobAddress  a blob address is not ``sha256/<64 lowercase hex>`` (also a ValueError)
    ├── ExecutionNotFound       an execution id is not in the store
    ├── ArtifactNotFound        no artifact answers a workflow input's ArtifactQuery
    ├── ExecutionNotFinished    an operation needs a finished execution (recover)
    ├── ConcurrencyConflict     another writer appended first (optimistic concurrency)
    ├── InvalidTransition       an event does not follow from the execution's state
    ├── NoTaskContext           current_context() outside a running task (also a LookupError)
    ├── StoreUnavailable        the event store cannot be reached
    ├── AccessDenied            the database refused the role (row-level security, privileges)
    ├── BrokerUnavailable       the event-stream broker (NATS JetStream) cannot be reached
    ├── TaskFailed              an execution failed; carries the node id and remote traceback
    ├── BlobNotFound            no blob at this address in the blob store
    ├── CorruptBlob             a blob's bytes do not hash to its address
    ├── CorruptEvent            a stored event fails its checksum chain or does not decode
    ├── BlobStoreUnavailable    the blob store could not be reached or failed mid-operation
    ├── MissingFile             a File or Dir to upload names nothing (also a FileNotFoundError)
    └── ExecutionAborted        an execution was aborted
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "ArtifactNotFound",
    "BlobNotFound",
    "BlobStoreUnavailable",
    "BrokerUnavailable",
    "CompileError",
    "ConcurrencyConflict",
    "ConfigError",
    "CorruptBlob",
    "CorruptEvent",
    "ExecutionAborted",
    "ExecutionNotFinished",
    "ExecutionNotFound",
    "InputLimitExceeded",
    "InvalidBlobAddress",
    "InvalidExecutionId",
    "InvalidResources",
    "InvalidScope",
    "InvalidTransition",
    "MissingFile",
    "NoTaskContext",
    "NodeNotFound",
    "OutputsNotReady",
    "SlipstreamError",
    "StoreUnavailable",
    "TaskFailed",
    "TypeMismatch",
    "UnknownInput",
]


class SlipstreamError(Exception):
    """Root of every error Slipstream raises on purpose."""


class CompileError(SlipstreamError):
    """A workflow, dynamic or task definition is invalid; the message says where and how to fix it."""


class TypeMismatch(CompileError):
    """A value, or a producer's output, does not fit the type of the input it is bound to."""


class UnknownInput(CompileError):
    """An argument names no input of the task or workflow interface."""


class ConfigError(SlipstreamError):
    """A setting, URL or backend name is wrong or missing."""


class InvalidResources(ConfigError, ValueError):
    """A ``Resources(cpu=..., mem=..., gpu=...)`` field holds a value no executor could honour.

    Also a ``ValueError``, so that msgspec reports it as a ``msgspec.ValidationError`` when a stored
    spec or event holding such a value is decoded (the store then treats the record as corrupt).

    Attributes:
        field: ``cpu``, ``mem`` or ``gpu``.
        value: the rejected value.
    """

    def __init__(self, field: str, value: object, fix: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"Resources({field}={value!r}): {fix}")


class InvalidScope(SlipstreamError, ValueError):
    """A project or domain name that the engine does not accept."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class InvalidExecutionId(SlipstreamError, ValueError):
    """A string that cannot be an execution id (empty, too long, or holding other characters)."""

    def __init__(self, execution_id: str) -> None:
        shown = execution_id if len(execution_id) <= 40 else execution_id[:40] + "..."
        super().__init__(
            f"{shown!r} is not an execution id: ids are 1 to 128 characters of letters, digits, '.', '_', ':' "
            "and '-', starting with a letter or digit"
        )


class InputLimitExceeded(SlipstreamError, ValueError):
    """An input is larger, or nested deeper, than the engine accepts."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class ExecutionNotFound(SlipstreamError):
    """No execution with this id exists in the store."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        super().__init__(
            f"execution {execution_id!r} not found: list known ids with `slipstream executions list` "
            "or `Engine.list_executions()`"
        )


class ArtifactNotFound(SlipstreamError):
    """No artifact in the catalog answers the query a workflow input defaults to (or is given)."""

    def __init__(self, workflow: str, input_name: str, query: str, why: str = "") -> None:
        self.workflow = workflow
        self.input_name = input_name
        detail = f" ({why})" if why else ""
        super().__init__(
            f"workflow {workflow!r}, input {input_name!r}: no artifact answers {query}{detail}; run a task that "
            f"publishes it first (see `slipstream catalog ls`), or pass {input_name}=... explicitly"
        )


class ExecutionNotFinished(SlipstreamError):
    """The execution is still running, and the operation needs it finished."""

    def __init__(self, execution_id: str, operation: str, status: str) -> None:
        self.execution_id = execution_id
        self.status = status
        super().__init__(
            f"cannot {operation} execution {execution_id!r}: it is still {status}; wait for it to finish "
            "or abort it first"
        )


class NodeNotFound(SlipstreamError):
    """The execution has no node (or map element) with this id."""

    def __init__(self, execution_id: str, node_id: str) -> None:
        self.execution_id = execution_id
        self.node_id = node_id
        super().__init__(
            f"execution {execution_id!r} has no node {node_id!r}: see its node ids with "
            f"`slipstream executions show {execution_id}` (a map element is `<map node>/<index>`)"
        )


class OutputsNotReady(SlipstreamError):
    """The node has no outputs: it has not succeeded (it failed, still runs, or never ran)."""

    def __init__(self, execution_id: str, node_id: str, phase: str) -> None:
        self.execution_id = execution_id
        self.node_id = node_id
        self.phase = phase
        super().__init__(f"node {node_id!r} of execution {execution_id!r} has no outputs: it is {phase}")


class ConcurrencyConflict(SlipstreamError):
    """Another writer appended to the execution first; reload its events and try again."""

    def __init__(self, execution_id: str, expected_version: int, actual_version: int | None = None) -> None:
        self.execution_id = execution_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        found = "" if actual_version is None else f", found version {actual_version}"
        super().__init__(
            f"execution {execution_id!r}: expected version {expected_version}{found}; another writer "
            "appended first: reload the execution's events and plan again"
        )


class InvalidTransition(SlipstreamError):
    """An event does not follow from the execution state it is applied to."""

    def __init__(self, execution_id: str, version: int, kind: str, node_id: str, why: str) -> None:
        self.execution_id = execution_id
        self.version = version
        self.kind = kind
        self.node_id = node_id
        where = f" node {node_id!r}" if node_id else ""
        super().__init__(f"execution {execution_id!r} v{version}: {kind}{where} is impossible here: {why}")


class NoTaskContext(SlipstreamError, LookupError):
    """`current_context()` was called outside a running task."""

    def __init__(self) -> None:
        super().__init__(
            "current_context() called outside a running task: call it inside a @task function body "
            "while an executor runs it (not at import time, in a @workflow body, or in a test calling "
            "the function directly)"
        )


class StoreUnavailable(SlipstreamError):
    """The event store could not be reached or failed mid-operation; the append may be retried."""


class AccessDenied(SlipstreamError):
    """The database refused the role the engine connects as: a row of a project it was not granted
    (Postgres row-level security), or a table it has no privilege on."""

    def __init__(self, role: str, what: str) -> None:
        self.role = role
        super().__init__(
            f"Postgres refused role {role!r}: {what}. A tenant role reads and writes only the projects it was "
            f"granted: scope the engine to one of them (Engine(project=...), --project or SLIPSTREAM_PROJECT), "
            f"or have an administrator run `slipstream admin grant --role {role} --project PROJECT`"
        )


class BrokerUnavailable(SlipstreamError):
    """The event-stream broker (NATS JetStream) could not be reached or refused the stream.

    Attributes:
        url: the broker's URL, without credentials.
        reason: what went wrong, in a few words.
    """

    def __init__(self, url: str, reason: str, fix: str = "") -> None:
        self.url = url
        self.reason = reason
        fix = fix or (
            "start the server (with JetStream enabled: nats-server -js), or fix the URL "
            "(nats= or SLIPSTREAM_NATS_URL), then try again"
        )
        super().__init__(f"cannot reach NATS at {url}: {reason}; {fix}")


class TaskFailed(SlipstreamError):
    """An execution failed because a node failed.

    Attributes:
        execution_id: the failed execution.
        node_id: the node whose failure failed the execution.
        error_kind: ``user``, ``system`` or ``timeout``.
        remote_traceback: the traceback captured where the task ran.
    """

    def __init__(
        self,
        execution_id: str,
        node_id: str,
        message: str,
        error_kind: str = "user",
        remote_traceback: str = "",
    ) -> None:
        self.execution_id = execution_id
        self.node_id = node_id
        self.error_kind = error_kind
        self.remote_traceback = remote_traceback
        self.message = message
        super().__init__(
            f"execution {execution_id!r} failed at node {node_id!r} ({error_kind} error): {message}"
            + (f"\n\nRemote traceback:\n{remote_traceback}" if remote_traceback else "")
        )


class ExecutionAborted(SlipstreamError):
    """The execution was aborted before it finished."""

    def __init__(self, execution_id: str, reason: str = "") -> None:
        self.execution_id = execution_id
        self.reason = reason
        super().__init__(f"execution {execution_id!r} was aborted" + (f": {reason}" if reason else ""))


class InvalidBlobAddress(ConfigError, ValueError):
    """A blob address is malformed: only ``sha256/<64 lowercase hex digits>`` (or its URL form
    ``blob://sha256/...``) names a blob, so that no address can name a path outside the store.

    Also a ``ValueError``, so that msgspec reports it as a validation error when a stored literal
    holding such an address is decoded.

    Attributes:
        address: the rejected text.
    """

    def __init__(self, address: object, why: str) -> None:
        self.address = address
        shown = address if not isinstance(address, str) or len(address) <= 120 else address[:117] + "..."
        super().__init__(
            f"invalid blob address {shown!r}: {why}; a blob address is 'sha256/' followed by 64 lowercase hex "
            "digits (or 'blob://sha256/<hex>'), as returned by BlobStore.put"
        )


class BlobNotFound(SlipstreamError):
    """No blob with this address is in the blob store.

    Attributes:
        address: the blob's address (``sha256/<hex>``).
        store: a description of the store that was asked (its directory or URL).
    """

    def __init__(self, address: str, store: str, detail: str = "") -> None:
        self.address = address
        self.store = store
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"blob {address} not found in blob store {store}{why}: it was never stored there or was deleted; "
            "check that the engine uses the same blob store (state directory or URL) as the run that wrote it"
        )


class CorruptBlob(SlipstreamError):
    """A blob's bytes do not hash to its address: the stored object was damaged or overwritten.

    Attributes:
        address: the address that was read.
        actual: the address its bytes hash to.
        store: a description of the store.
    """

    def __init__(self, address: str, actual: str, store: str) -> None:
        self.address = address
        self.actual = actual
        self.store = store
        super().__init__(
            f"blob {address} in blob store {store} is corrupt: its bytes hash to {actual}; delete it "
            "(BlobStore.delete) and store the value again, or restore it from a copy"
        )


class CorruptEvent(SlipstreamError):
    """A stored event of an execution's log was changed, removed or damaged after it was written:
    its checksum does not chain from the event before it, or its payload does not decode.

    Attributes:
        execution_id: the execution whose log is corrupt.
        version: the first event (version) found wrong.
        problem: what is wrong with it.
        seq: its position in the whole log, when a tailing read (`EventStore.read_all`) found it:
            a tailing reader may move past it (it can never be read), saying so.
    """

    def __init__(self, execution_id: str, version: int, problem: str, *, seq: int | None = None) -> None:
        self.execution_id = execution_id
        self.version = version
        self.problem = problem
        self.seq = seq
        super().__init__(
            f"execution {execution_id!r} has a corrupt event log at version {version}: {problem}; the stored "
            f"history was changed outside Slipstream. Run `slipstream executions verify {execution_id}` to see "
            "what else is affected, and restore the events table from a backup"
        )


class BlobStoreUnavailable(SlipstreamError):
    """The blob store could not be reached, or failed mid-operation (I/O error, permissions, network).

    Attributes:
        store: a description of the store.
    """

    def __init__(self, store: str, operation: str, cause: object) -> None:
        self.store = store
        self.operation = operation
        super().__init__(
            f"blob store {store} failed to {operation}: {cause}; check that it is reachable and writable "
            "(path, permissions, credentials, free space) and retry"
        )


class MissingFile(SlipstreamError, FileNotFoundError):
    """A ``File`` or ``Dir`` to upload to the blob store names nothing on this machine.

    Attributes:
        path: the path that was given.
        kind: ``"file"`` or ``"directory"``.
    """

    def __init__(self, path: str, kind: str = "file") -> None:
        self.path = path
        self.kind = kind
        super().__init__(
            f"{kind} {path} does not exist (or is not a {kind}): a {'File' if kind == 'file' else 'Dir'} is "
            f"uploaded to the blob store when it is returned or launched; create it before, or check the path"
        )
