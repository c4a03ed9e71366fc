"""`FsspecBlobStore`: content-addressed blobs on any fsspec file system (the ``fsspec`` extra).

``s3://bucket/prefix``, ``gs://bucket/prefix``, ``memory://name`` (tests), ``file:///path``: the
URL picks the file system, and its protocol's package must be installed (``s3fs`` for ``s3://``,
``gcsfs`` for ``gs://``). Layout under the URL, as in `LocalBlobStore`:
``sha256/<first 2 hex>/<other 62 hex>``, and ``tmp/`` for streamed writes in progress.

Atomicity: a ``put`` of bytes whose address is known writes the object in one request (an object
store's PUT is all or nothing; on a local file system it is written under ``tmp/`` and renamed).
A ``put_stream`` writes a temporary object under ``tmp/`` while hashing, then moves it into place
(a rename on local disks, a server-side copy on object stores). A streamed put that fails is
removed; one whose process dies leaves a temporary object under ``tmp/``: give the bucket a
lifecycle rule that expires ``tmp/`` after a day.

Reads are verified by default (``verify=True``): objects cross a network and may be written by
other clients. On ``file://`` URLs, paths inside the store that are symbolic links are refused,
checked before each access; `LocalBlobStore` walks paths without following links at all, and is
the one to use for a local directory.

fsspec is imported when a store is built, never by ``import catalog``. Its calls are blocking and
run in worker threads (`anyio.to_thread`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator, Mapping
from typing import Any

import anyio

from catalog._blob_chunks import coalesce
from engine.errors import BlobNotFound, BlobStoreUnavailable, ConfigError
from engine.interfaces import BlobStore, blob_address

__all__ = ["FsspecBlobStore"]

# Where one write of a whole object is all or nothing (object stores' PUT; memory:// sets the whole
# value at once), a put of known bytes writes the object in place. Elsewhere (local disks, sftp,
# hdfs, ...) it is written under tmp/ and renamed, and directories are made first.
_ATOMIC_WRITE_PROTOCOLS = frozenset({"memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})


class FsspecBlobStore(BlobStore):
    """Blobs as objects under an fsspec URL.

    Args:
        url: where the store lives: ``s3://bucket/prefix``, ``gs://...``, ``memory://name``,
            ``file:///path``.
        verify: the default for reads' ``verify`` (on: see the module docs).
        storage_options: options for the file system (credentials, endpoint, ...), as fsspec's
            ``url_to_fs`` takes them.

    Raises:
        ConfigError: fsspec, or the package for the URL's protocol, is not installed, or the URL
            is not one fsspec understands.
    """

    name = "fsspec"

    def __init__(self, url: str, *, verify: bool = True, storage_options: Mapping[str, Any] | None = None) -> None:
        try:
            import fsspec.core
            from fsspec.implementations.local import LocalFileSystem
        except ImportError as exc:
            raise ConfigError(
                f"blob store {url!r} needs fsspec: pip install 'slipstream[fsspec]' (and s3fs or gcsfs for "
                "s3:// or gs:// URLs)"
            ) from exc
        try:
            fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ImportError as exc:
            raise ConfigError(
                f"blob store {url!r}: the package for its protocol is not installed ({exc}); install it "
                "(s3fs for s3://, gcsfs for gs://)"
            ) from exc
        except ValueError as exc:
            raise ConfigError(f"blob store URL {url!r} is not one fsspec understands: {exc}") from exc
        self.url = url
        self.verify_reads = verify
        self._fs = fs
        self._root = path.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        self._atomic_writes = not self._local and bool(protocols & _ATOMIC_WRITE_PROTOCOLS)
        self._real_root = os.path.realpath(self._root) if self._local else ""

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"FsspecBlobStore({self.url!r})"

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the root directory where the file system has directories (not object stores)."""
        if not self._atomic_writes:
            with self._failures("start"):
                await anyio.to_thread.run_sync(lambda: self._fs.makedirs(f"{self._root}/tmp", exist_ok=True))

    # --- writes ----------------------------------------------------------------------------------

    async def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data``; return its address (see `BlobStore.put`)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"put takes bytes-like data, got {type(data).__name__}")
        return await anyio.to_thread.run_sync(self._put, bytes(data))

    def _put(self, data: bytes) -> str:
        address = blob_address(data)
        path = self._path(address)
        with self._failures("store", address):
            if self._stored(path, len(data)):
                return address
            if self._atomic_writes:
                self._fs.pipe_file(path, data)  # one request: all or nothing
                return address
            temp = self._temp_path()
            try:
                self._prepare_temp(temp)
                self._fs.pipe_file(temp, data)
                self._move_into_place(temp, path)
            except BaseException:
                self._remove_quietly(temp)
                raise
        return address

    async def put_stream(self, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> str:
        """Store the concatenation of ``chunks`` (see `BlobStore.put_stream`)."""
        temp = self._temp_path()
        hasher = hashlib.sha256()
        size = 0
        with self._failures("store"):
            file = await anyio.to_thread.run_sync(self._open_temp, temp)
        try:
            async for piece in coalesce(chunks):
                with self._failures("store"):
                    await anyio.to_thread.run_sync(_hash_and_write, hasher, file, piece)
                size += len(piece)
            with self._failures("store"):
                await anyio.to_thread.run_sync(file.close)
                address = "sha256/" + hasher.hexdigest()
                await anyio.to_thread.run_sync(self._finish, temp, self._path(address), size)
            return address
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._abort, file, temp)
            raise

    def _open_temp(self, temp: str) -> Any:
        self._prepare_temp(temp)
        return self._fs.open(temp, "wb")

    def _prepare_temp(self, temp: str) -> None:
        if not self._atomic_writes:
            self._fs.makedirs(temp.rsplit("/", 1)[0], exist_ok=True)
        if self._local:
            self._check_contained(temp)

    def _finish(self, temp: str, path: str, size: int) -> None:
        if self._stored(path, size):
            self._remove_quietly(temp)
        else:
            self._move_into_place(temp, path)

    def _abort(self, file: Any, temp: str) -> None:
        # closing may upload what was buffered, under the temporary name that is removed next
        with contextlib.suppress(Exception):
            file.close()
        self._remove_quietly(temp)

    def _move_into_place(self, temp: str, path: str) -> None:
        if self._local:
            self._fs.makedirs(os.path.dirname(path), exist_ok=True)
            self._check_contained(path, final=True)
            # os.replace, not fs.mv: shutil.move would move *into* a directory that a planted link
            # at ``path`` leads to; a rename replaces the link itself, atomically
            os.replace(temp, path)
            return
        if not self._atomic_writes:
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self._fs.mv(temp, path)

    def _remove_quietly(self, path: str) -> None:
        with contextlib.suppress(OSError):
            self._fs.rm_file(path)

    def _stored(self, path: str, size: int) -> bool:
        """Whether a complete object is at ``path`` (a file of the right size, not a link)."""
        info = self._info(path)
        return info is not None and info.get("size") == size

    # --- reads -----------------------------------------------------------------------------------

    async def _get(self, address: str) -> bytes:
        path = self._path(address)
        with self._failures("read", address):
            return await anyio.to_thread.run_sync(self._cat, address, path, None, None)

    async def _open(self, address: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        path = self._path(address)
        total = await self._size(address)
        offset = 0
        while offset < total:
            end = min(offset + chunk_size, total)
            with self._failures("read", address):
                chunk = await anyio.to_thread.run_sync(self._cat, address, path, offset, end)
            if not chunk:
                return
            yield chunk
            offset += len(chunk)

    async def _read_range(self, address: str, offset: int, length: int) -> bytes:
        path = self._path(address)
        total = await self._size(address)
        if length == 0 or offset >= total:
            return b""
        with self._failures("read", address):
            return await anyio.to_thread.run_sync(self._cat, address, path, offset, min(offset + length, total))

    async def _exists(self, address: str) -> bool:
        with self._failures("read", address):
            return await anyio.to_thread.run_sync(self._info, self._path(address)) is not None

    async def _size(self, address: str) -> int:
        with self._failures("read", address):
            info = await anyio.to_thread.run_sync(self._info, self._path(address))
        if info is None:
            raise BlobNotFound(address, str(self))
        return int(info["size"])

    async def _delete(self, address: str) -> bool:
        path = self._path(address)
        with self._failures("delete", address):
            return await anyio.to_thread.run_sync(self._rm, path)

    def _rm(self, path: str) -> bool:
        if self._local and os.path.islink(path):
            os.unlink(path)  # a planted link is removed, never followed
            return False
        if self._local and not self._contained(path):
            return False  # a link on the way: whatever it leads to is not ours
        try:
            self._fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def _cat(self, address: str, path: str, start: int | None, end: int | None) -> bytes:
        if self._local and not self._contained(path):
            raise BlobNotFound(address, str(self), _LINK_DETAIL)
        try:
            return bytes(self._fs.cat_file(path, start=start, end=end))
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(address, str(self)) from None

    def _info(self, path: str) -> dict[str, Any] | None:
        """The object's info if a blob is there (a file, and on local disks not reached by a link)."""
        if self._local and not self._contained(path):
            return None
        try:
            info: dict[str, Any] = self._fs.info(path)
        except FileNotFoundError:
            return None
        return info if info.get("type") == "file" else None

    # --- paths -----------------------------------------------------------------------------------

    def _path(self, address: str) -> str:
        digest = address[len("sha256/") :]
        return f"{self._root}/sha256/{digest[:2]}/{digest[2:]}"

    def _temp_path(self) -> str:
        return f"{self._root}/tmp/{os.getpid()}-{uuid.uuid4().hex}"

    def _contained(self, path: str) -> bool:
        """On a local disk: no link on the way from the root to ``path``, and it resolves inside."""
        relative = os.path.relpath(path, self._root)
        probe = self._root
        for part in relative.split(os.sep):
            probe = os.path.join(probe, part)
            if os.path.islink(probe):
                return False
        real = os.path.realpath(path)
        return real.startswith(self._real_root + os.sep)

    def _check_contained(self, path: str, *, final: bool = False) -> None:
        """Refuse to write through a link (a link at a blob's own path is replaced by the move)."""
        parent = os.path.dirname(path)
        if not self._contained(parent):
            raise OSError(f"{parent} inside the store is a symbolic link or leaves the store; remove it")
        if not final and os.path.islink(path):
            raise OSError(f"{path} inside the store is a symbolic link; remove it")

    @contextlib.contextmanager
    def _failures(self, operation: str, address: str = "") -> Iterator[None]:
        """Translate the file system's errors into `BlobStoreUnavailable` (typed errors pass through)."""
        try:
            yield
        except OSError as exc:
            raise BlobStoreUnavailable(str(self), f"{operation} {address}".strip(), exc) from exc


_LINK_DETAIL = "a symbolic link is on its path, and links inside the store are never followed"


def _hash_and_write(hasher: Any, file: Any, piece: bytes) -> None:
    hasher.update(piece)
    file.write(piece)
