"""How an `Engine` finds and builds its backends: entry points, by name (DESIGN section 8).

Nothing here knows a backend by name: the built-in ones register through the same entry-point
groups a third-party package uses. A setting whose backend is not installed is a `ConfigError`
that names what to install, never a silent no-op.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoints, entry_points
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.interfaces import BlobStore, Executor, Service

__all__ = ["backend", "blob_store", "build_executors", "event_stream_services", "index_executors", "installed"]

ExecutorSpec = str | Executor


_scanned: tuple[tuple[str, ...], EntryPoints] | None = None


def installed(group: str) -> EntryPoints:
    """The entry points of ``group``, from one scan of the installed packages per ``sys.path``.

    A scan reads every installed package's metadata (tens of milliseconds with a few hundred
    packages); an engine looks up four or five groups as it starts. A package put on ``sys.path``
    later (a plugin installed at run time) is found: the path is part of the key.
    """
    global _scanned
    path = tuple(sys.path)
    if _scanned is None or _scanned[0] != path:
        _scanned = (path, entry_points())
    return _scanned[1].select(group=group)


def backend(group: str, name: str, purpose: str = "") -> Any:
    """The backend class registered under ``name`` in the entry-point ``group``.

    Raises:
        ConfigError: none is installed under that name (the message lists the installed ones).
    """
    found = {ep.name: ep for ep in installed(group)}
    if name not in found:
        why = f" for {purpose}" if purpose else ""
        raise ConfigError(
            f"no backend named {name!r} in entry-point group {group!r}{why}; installed: {sorted(found)}. "
            "Install the plugin package that provides it, or pick an installed one"
        )
    return found[name].load()


def build_executors(
    executors: Sequence[ExecutorSpec], options: Mapping[str, Any] | None = None, cluster_address: str | None = None
) -> dict[str, Executor]:
    """Executors by name from names (built with ``options``) or ready instances.

    Args:
        executors: entry-point names in ``slipstream.executors``, or `Executor` instances.
        options: keyword arguments for every executor built here by name.
        cluster_address: a cluster to connect to (``ray_address=``); passed as ``address=`` to the
            executors built here, each of which must accept it.

    Raises:
        ConfigError: an unknown name, two executors with one name, an option an executor built by
            name does not take, or a cluster address for executors that do not connect to a cluster.
    """
    built: list[Executor] = []
    for item in executors:
        if isinstance(item, Executor):
            built.append(item)
            continue
        cls = backend("slipstream.executors", item, "an executor")
        kwargs = dict(options or {})
        if cluster_address is not None:
            if "address" not in inspect.signature(cls).parameters:
                raise ConfigError(
                    f"a cluster address ({cluster_address!r}, from ray_address= or SLIPSTREAM_RAY_ADDRESS) was "
                    f"given, but executor {item!r} does not connect to a cluster; install the Ray plugin "
                    "(pip install 'slipstream[ray]') and use executor='ray', or drop the address"
                )
            kwargs.setdefault("address", cluster_address)
        _check_options(item, cls, kwargs)
        built.append(cls(**kwargs))
    return index_executors(built)


def _check_options(name: str, cls: Any, kwargs: Mapping[str, Any]) -> None:
    """Refuse options an executor does not take (they would be a TypeError, or silently lost)."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise ConfigError(
            f"executor {name!r} takes no option(s) {unknown} (executor_options go to every executor built by "
            f"name; it takes {sorted(parameters)}): build the executors that need options yourself, e.g. "
            "executors=[LocalExecutor(mode='process'), 'agents']"
        )


def index_executors(executors: Mapping[str, Executor] | Sequence[Executor]) -> dict[str, Executor]:
    """Executors by name (``Executor.name``); a mapping is taken as given."""
    if isinstance(executors, Mapping):
        return dict(executors)
    indexed: dict[str, Executor] = {}
    for executor in executors:
        name = executor.name or type(executor).__name__
        if name in indexed:
            raise ConfigError(
                f"two executors are named {name!r}; give each a distinct name (Executor.name), since tasks "
                "choose one with executor="
            )
        indexed[name] = executor
    return indexed


def event_stream_services(url: str | None) -> list[Service]:
    """The services that publish committed events to the stream at ``url`` (``nats=``).

    Raises:
        ConfigError: a URL was given but no event-stream backend is installed.
    """
    if url is None:
        return []
    sink = backend("slipstream.event_sinks", "nats", f"the event stream at {url!r} (nats= or SLIPSTREAM_NATS_URL)")
    return [sink(url)]


def blob_store(location: str | os.PathLike[str] | None, default: Path) -> BlobStore:
    """The blob store at ``location``: a directory (or ``file://`` URL) for the ``local`` backend;
    a URL whose scheme names a backend in ``slipstream.blobstores`` (a plugin's ``myblobs://...``)
    for that backend; any other URL (``s3://bucket/prefix``, ``gs://...``, ``memory://...``) for
    ``fsspec``; the directory ``default`` when None.

    Raises:
        ConfigError: the backend for that kind of location is not installed.
    """
    text = os.fspath(location) if location is not None else None
    if text is None or "://" not in text or text.startswith("file://"):
        path = Path(text.removeprefix("file://")) if text else default
        return backend("slipstream.blobstores", "local", "a blob store in a directory")(path)
    scheme = text.split("://", 1)[0]
    named = {ep.name for ep in installed("slipstream.blobstores")} - {"local", "fsspec"}
    if scheme in named:
        return backend("slipstream.blobstores", scheme, f"the blob store at {text!r}")(text)
    return backend("slipstream.blobstores", "fsspec", f"the blob store at {text!r} (pip install 'slipstream[fsspec]')")(
        text
    )
