"""``File`` and ``Dir``: files and directories passed between tasks through the blob store.

A task that returns a ``File`` hands over its *content*: the worker's runtime uploads the bytes to
the engine's blob store (streamed, never read whole into memory) and the literal records the blob's
address and the file's name, ``{"blob": "sha256/...", "path": "data.csv"}``. A ``Dir`` is uploaded
as a manifest blob: one ``[relative path, size, mode, address]`` row per file below it, each file a
blob of its own. A task that takes one gets it materialised under a temporary directory of its
attempt, removed when the attempt ends. Cache keys hash the literal, so they follow the content and
the name, never where a producer happened to write the file.

A ``File`` that was never uploaded (``blob`` empty) is a plain path: what a runtime without a blob
store passes (an executor used on its own, outside an engine).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

import anyio
import msgspec

from engine._types import type_mentions
from engine.errors import MissingFile

if TYPE_CHECKING:
    from engine.interfaces import BlobStore

__all__ = ["Dir", "File", "Materializer", "holds_files", "upload_files", "upload_inputs"]

CHUNK_SIZE = 1024 * 1024  # bytes read or written at a time: what a transfer holds in memory


class File(msgspec.Struct, frozen=True, omit_defaults=True):
    """A file that a task reads or writes.

    Attributes:
        path: where the file is on this machine. In a literal that went through the blob store it is
            the file's name only; a task that takes the file sees a local path.
        blob: the blob store address of its content once uploaded (empty for a plain path).
    """

    path: str  # a str or os.PathLike at construction; always a str after
    blob: str = ""

    def __post_init__(self) -> None:
        # accept ``pathlib.Path`` too, but always store (and encode) a plain string
        if not isinstance(self.path, str):
            msgspec.structs.force_setattr(self, "path", os.fspath(self.path))

    @property
    def name(self) -> str:
        """The file's name (the last part of its path)."""
        return os.path.basename(self.path.rstrip("/"))

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """Open the file, as the builtin ``open`` does.

        Args:
            mode: the ``open`` mode (binary read by default).
            **kwargs: passed on to ``open`` (``encoding`` ...).

        Returns:
            The open file object.
        """
        return open(self.path, mode, **kwargs)

    def exists(self) -> bool:
        """Whether the file exists.

        Returns:
            ``True`` if ``path`` is an existing file.
        """
        return os.path.isfile(self.path)

    def __fspath__(self) -> str:
        return self.path


class Dir(msgspec.Struct, frozen=True, omit_defaults=True):
    """A directory that a task reads or writes.

    Attributes:
        path: where the directory is on this machine (its name only in an uploaded literal).
        blob: the address of its manifest blob once uploaded (empty for a plain path).
    """

    path: str  # a str or os.PathLike at construction; always a str after
    blob: str = ""

    def __post_init__(self) -> None:
        # accept ``pathlib.Path`` too, but always store (and encode) a plain string
        if not isinstance(self.path, str):
            msgspec.structs.force_setattr(self, "path", os.fspath(self.path))

    @property
    def name(self) -> str:
        """The directory's name (the last part of its path)."""
        return os.path.basename(self.path.rstrip("/"))

    def files(self) -> Iterator[File]:
        """Walk the directory.

        Returns:
            An iterator of every file below the directory, in sorted order per level.
        """
        for root, dirs, names in os.walk(self.path):
            dirs.sort()
            for name in sorted(names):
                yield File(os.path.join(root, name))

    def __fspath__(self) -> str:
        return self.path


class _Entry(msgspec.Struct, array_like=True, frozen=True):
    """One file of a ``Dir`` manifest."""

    path: str  # relative to the directory, "/"-separated
    size: int
    mode: int  # permission bits
    blob: str


_MANIFEST = msgspec.msgpack.Encoder()
_MANIFEST_DECODER = msgspec.msgpack.Decoder(list[_Entry])


# --- which types hold files --------------------------------------------------------------------------


def holds_files(tp: Any) -> bool:
    """Whether values of ``tp`` may contain a ``File`` or ``Dir`` (through containers, unions,
    dataclass and Struct fields); the runtime walks only such values."""
    return type_mentions(tp, (File, Dir))


async def _replace_files(value: Any, fn: Callable[[File | Dir], Awaitable[File | Dir]]) -> Any:
    """``value`` with each ``File``/``Dir`` in it (in lists, tuples, dicts, dataclasses and Structs)
    replaced by ``await fn(it)``; containers without one are returned as they are."""
    if isinstance(value, File | Dir):
        return await fn(value)
    if isinstance(value, list | tuple):
        items = [await _replace_files(item, fn) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        if isinstance(value, list):
            return items
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # a namedtuple takes fields
    if isinstance(value, dict):
        changed = {key: await _replace_files(item, fn) for key, item in value.items()}
        return value if all(changed[key] is value[key] for key in value) else changed
    if isinstance(value, msgspec.Struct):
        updates = {}
        for name in value.__struct_fields__:
            old = getattr(value, name)
            new = await _replace_files(old, fn)
            if new is not old:
                updates[name] = new
        return msgspec.structs.replace(value, **updates) if updates else value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        updates = {}
        for field in dataclasses.fields(value):
            if not field.init:
                continue
            old = getattr(value, field.name)
            new = await _replace_files(old, fn)
            if new is not old:
                updates[field.name] = new
        return dataclasses.replace(value, **updates) if updates else value
    return value


# --- upload ------------------------------------------------------------------------------------------


async def upload_files(value: Any, store: BlobStore) -> Any:
    """``value`` with every local ``File``/``Dir`` in it uploaded to ``store`` and replaced by its
    reference (name and blob address).

    A value at a path of this machine is uploaded (again, if it was a materialised input: a task
    may have changed it in place; the store keeps one copy of equal bytes). One with a blob
    address and a relative path (a name) or a path that is not here is a reference, kept as it is.

    Raises:
        MissingFile: a ``File``/``Dir`` with no blob address names nothing on this machine.
    """

    async def upload(item: File | Dir) -> File | Dir:
        if item.blob and not os.path.isabs(item.path):
            return item  # a reference as it came (a name, not a path here): not whatever cwd holds
        is_file = isinstance(item, File)
        present = await anyio.to_thread.run_sync(os.path.isfile if is_file else os.path.isdir, item.path)
        if not present:
            if item.blob:
                return item
            raise MissingFile(item.path, "file" if is_file else "directory")
        address = await (_upload_file(item.path, store) if is_file else _upload_dir(item.path, store))
        return type(item)(item.name, address)

    return await _replace_files(value, upload)


async def upload_inputs(inputs: dict[str, Any], specs: Mapping[str, Any], store: BlobStore) -> dict[str, Any]:
    """``inputs`` (name -> value) with the files in them uploaded (`upload_files`), and the
    defaults that hold files added, uploaded: what ``Engine.launch`` does before it encodes a
    workflow's inputs, so that no execution refers to a path of the launching machine.

    Args:
        inputs: the values given.
        specs: the workflow's input specs (``type``, ``default``, ``has_default``) by name.
        store: the blob store.

    Raises:
        MissingFile: a given (or default) ``File``/``Dir`` does not exist.
    """
    uploaded = dict(inputs)
    for name, spec in specs.items():
        if not holds_files(spec.type):
            continue
        if name in inputs:
            uploaded[name] = await upload_files(inputs[name], store)
        elif spec.has_default:
            default = await upload_files(spec.default, store)
            if default is not spec.default:
                uploaded[name] = default
    return uploaded


async def _chunks(path: str) -> AsyncIterator[bytes]:
    handle = await anyio.to_thread.run_sync(open, path, "rb")
    try:
        while chunk := await anyio.to_thread.run_sync(handle.read, CHUNK_SIZE):
            yield chunk
    finally:
        handle.close()


async def _upload_file(path: str, store: BlobStore) -> str:
    return await store.put_stream(_chunks(path))


async def _upload_dir(path: str, store: BlobStore) -> str:
    entries = []
    for relative, full in await anyio.to_thread.run_sync(_walk, path):
        info = await anyio.to_thread.run_sync(os.stat, full)
        address = await _upload_file(full, store)
        entries.append(_Entry(relative, info.st_size, stat.S_IMODE(info.st_mode), address))
    return await store.put(_MANIFEST.encode(entries))


def _walk(root: str) -> list[tuple[str, str]]:
    """Every file below ``root`` as ``(relative "/"-path, full path)``, sorted (a stable manifest)."""
    found = []
    for directory, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            full = os.path.join(directory, name)
            if os.path.isfile(full):
                found.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return sorted(found)


# --- materialise -------------------------------------------------------------------------------------


class Materializer:
    """Writes the files and directories an attempt takes under a temporary directory of its own.

    Args:
        store: the blob store their content is read from.
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._root: str | None = None
        self._count = 0

    async def materialize(self, value: Any) -> Any:
        """``value`` with every uploaded ``File``/``Dir`` in it written here and pointing here."""
        return await _replace_files(value, self._one)

    async def _one(self, item: File | Dir) -> File | Dir:
        if not item.blob:
            return item  # a plain path: the task reads it where it is
        if self._root is None:
            self._root = await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="slipstream-files-"))
        self._count += 1
        # a folder per value: two inputs may share a name
        target = os.path.join(self._root, str(self._count), item.name or "data")
        if isinstance(item, File):
            await anyio.to_thread.run_sync(lambda: os.makedirs(os.path.dirname(target)))
            await self._download(item.blob, target)
            return File(target, item.blob)
        manifest = _MANIFEST_DECODER.decode(await self.store.get(item.blob))
        await anyio.to_thread.run_sync(lambda: os.makedirs(target))
        for entry in manifest:
            parts = entry.path.split("/")
            if entry.path.startswith("/") or ".." in parts:
                raise ValueError(f"directory manifest {item.blob} names a path outside it: {entry.path!r}")
            full = os.path.join(target, *parts)
            await anyio.to_thread.run_sync(lambda full=full: os.makedirs(os.path.dirname(full), exist_ok=True))
            await self._download(entry.blob, full)
            await anyio.to_thread.run_sync(os.chmod, full, entry.mode)
        return Dir(target, item.blob)

    async def _download(self, address: str, target: str) -> None:
        handle = await anyio.to_thread.run_sync(open, target, "xb")
        try:
            async for chunk in self.store.open(address, chunk_size=CHUNK_SIZE):
                await anyio.to_thread.run_sync(handle.write, chunk)
        finally:
            handle.close()

    def cleanup(self) -> None:
        """Remove what was written (after the attempt, its outputs uploaded)."""
        root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
