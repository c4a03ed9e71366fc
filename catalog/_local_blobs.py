"""`LocalBlobStore`: content-addressed blobs in a directory (the embedded default, ``<state dir>/blobs``).

Layout: ``<root>/sha256/<first 2 hex>/<other 62 hex>`` (a fan-out of 256 directories keeps each one
small), and ``<root>/tmp/`` for writes in progress. A put writes a temporary file in ``tmp/``,
fsyncs it (unless ``fsync=False``), and renames it into place: ``rename`` within one file system is
atomic, so a reader sees the whole blob or none. Blob files are read-only (mode 0444).

Names cannot escape the root: addresses are validated before any I/O (`parse_blob_address`), and
every path below the root is walked with ``openat``-style calls (``dir_fd``) and ``O_NOFOLLOW``, so
a symbolic link planted anywhere inside the store is never followed, for reads or writes; a FIFO
or device planted there is never opened for reading either. The root itself is configuration and
may be a link.

All file I/O runs in worker threads (`anyio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator
from pathlib import Path

import anyio

from catalog._blob_chunks import coalesce
from engine.errors import BlobNotFound, BlobStoreUnavailable, ConfigError
from engine.interfaces import BlobStore, blob_address

__all__ = ["LocalBlobStore"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO planted at a blob's path must not hang the thread; no effect on files.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_BLOB_MODE = 0o444
_TEMP_PREFIX = ".put-"
# What opening a symbolic link with O_NOFOLLOW (or a non-directory with O_DIRECTORY) raises.
_LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, getattr(errno, "EMLINK", errno.ELOOP)}


class _Unsafe(Exception):
    """A path inside the store is a link or not what it should be (never followed)."""


class LocalBlobStore(BlobStore):
    """Blobs as files under a directory.

    Args:
        root: the store's directory (created on first use); the engine uses ``<state dir>/blobs``.
        fsync: flush each blob (and the directory entry naming it) to disk before a put returns,
            so that a blob an event refers to survives a power loss along with the event. Turn off
            only for scratch stores.
        verify: the default for reads' ``verify`` (off: each file was hashed on the way in and
            renamed into place whole; see `BlobStore`).
        temp_ttl: seconds after which ``start`` removes a temporary file left by a crashed put.
        clock: wall-clock seconds (injected for tests).

    Raises:
        ConfigError: this platform cannot open files relative to a directory without following
            links (not POSIX); use `FsspecBlobStore` with a ``file://`` URL there.
    """

    name = "local"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        verify: bool = False,
        temp_ttl: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _NOFOLLOW or os.open not in os.supports_dir_fd or os.stat not in os.supports_dir_fd:
            raise ConfigError(
                "LocalBlobStore needs a POSIX system (open relative to a directory, O_NOFOLLOW); "
                "use FsspecBlobStore('file:///path') on this platform"
            )
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.fsync = fsync
        self.verify_reads = verify
        self.temp_ttl = temp_ttl
        self._clock = clock

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the directory layout and remove temporary files older than ``temp_ttl``."""
        await anyio.to_thread.run_sync(self._start)

    def _start(self) -> None:
        with self._failures("start"):
            for parts in (("tmp",), ("sha256",)):
                os.close(self._dir(parts, create=True))
            tmp = self._dir(("tmp",), create=False)
            try:
                cutoff = self._clock() - self.temp_ttl
                for entry in os.scandir(tmp):
                    if entry.name.startswith(_TEMP_PREFIX) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=tmp)
            finally:
                os.close(tmp)

    # --- writes ----------------------------------------------------------------------------------

    async def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data``; return its address (see `BlobStore.put`)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"put takes bytes-like data, got {type(data).__name__}")
        return await anyio.to_thread.run_sync(self._put, data)

    def _put(self, data: bytes | bytearray | memoryview) -> str:
        # Hash first, write after: a dedup hit then writes nothing. (Hashing in a second thread
        # while writing was measured: no faster on a 2-core machine, and dedup hits paid a write.)
        address = blob_address(data)
        with self._failures("store", address):
            fan, name = _split(address)
            directory = self._dir(("sha256", fan), create=True)
            try:
                if self._stored(directory, name, memoryview(data).nbytes):
                    return address
                temp = _TempFile(self)
                try:
                    temp.write(data, hash=False)
                    temp.commit(directory, name)
                except BaseException:
                    temp.discard()
                    raise
            finally:
                os.close(directory)
        return address

    async def put_stream(self, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> str:
        """Store the concatenation of ``chunks`` (see `BlobStore.put_stream`)."""
        temp = await anyio.to_thread.run_sync(_TempFile, self)
        try:
            async for piece in coalesce(chunks):
                await anyio.to_thread.run_sync(temp.write, piece)
            return await anyio.to_thread.run_sync(self._finish, temp)
        except BaseException:
            # plain syscalls, done here so that a cancelled put still cleans up before it unwinds
            temp.discard()
            raise

    def _finish(self, temp: _TempFile) -> str:
        address = "sha256/" + temp.hasher.hexdigest()
        with self._failures("store", address):
            fan, name = _split(address)
            directory = self._dir(("sha256", fan), create=True)
            try:
                if self._stored(directory, name, temp.size):
                    temp.discard()
                else:
                    temp.commit(directory, name)
            finally:
                os.close(directory)
        return address

    # --- reads -----------------------------------------------------------------------------------

    async def _get(self, address: str) -> bytes:
        return await anyio.to_thread.run_sync(self._read_all, address)

    def _read_all(self, address: str) -> bytes:
        fd = self._open_blob(address, "read")
        with open(fd, "rb", buffering=0) as file, self._failures("read", address):
            return file.readall()

    async def _open(self, address: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        fd = await anyio.to_thread.run_sync(self._open_blob, address, "read")
        try:
            while True:
                with self._failures("read", address):
                    chunk = await anyio.to_thread.run_sync(os.read, fd, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            os.close(fd)

    async def _read_range(self, address: str, offset: int, length: int) -> bytes:
        return await anyio.to_thread.run_sync(self._pread, address, offset, length)

    def _pread(self, address: str, offset: int, length: int) -> bytes:
        fd = self._open_blob(address, "read")
        try:
            with self._failures("read", address):
                parts = []
                while length > 0:
                    part = os.pread(fd, min(length, 1 << 30), offset)
                    if not part:
                        break
                    parts.append(part)
                    offset += len(part)
                    length -= len(part)
                return b"".join(parts)
        finally:
            os.close(fd)

    async def _exists(self, address: str) -> bool:
        return await anyio.to_thread.run_sync(self._lstat, address) is not None

    async def _size(self, address: str) -> int:
        found = await anyio.to_thread.run_sync(self._lstat, address)
        if found is None:
            raise BlobNotFound(address, str(self))
        return found.st_size

    async def _delete(self, address: str) -> bool:
        return await anyio.to_thread.run_sync(self._unlink, address)

    def _lstat(self, address: str) -> os.stat_result | None:
        """The blob file's own status, or None if it is absent, a link, or not a regular file."""
        fan, name = _split(address)
        with self._failures("read", address):
            try:
                directory = self._dir(("sha256", fan), create=False)
            except (FileNotFoundError, _Unsafe):
                return None
            try:
                found = os.stat(name, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                return None
            finally:
                os.close(directory)
        return found if stat.S_ISREG(found.st_mode) else None

    def _unlink(self, address: str) -> bool:
        fan, name = _split(address)
        with self._failures("delete", address):
            try:
                directory = self._dir(("sha256", fan), create=False)
            except (FileNotFoundError, _Unsafe):
                return False
            try:
                was_blob = stat.S_ISREG(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
                os.unlink(name, dir_fd=directory)  # a planted link is removed, never followed
            except FileNotFoundError:
                return False
            finally:
                os.close(directory)
        return was_blob

    # --- paths -----------------------------------------------------------------------------------

    def _open_blob(self, address: str, operation: str) -> int:
        """A read-only descriptor of the blob's regular file; `BlobNotFound` if there is none."""
        fan, name = _split(address)
        with self._failures(operation, address):
            try:
                directory = self._dir(("sha256", fan), create=False)
            except FileNotFoundError:
                raise BlobNotFound(address, str(self)) from None
            except _Unsafe as exc:
                raise BlobNotFound(address, str(self), str(exc)) from None
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=directory)
            except FileNotFoundError:
                raise BlobNotFound(address, str(self)) from None
            except OSError as exc:
                if exc.errno not in _LINK_ERRNOS:
                    raise
                raise BlobNotFound(address, str(self), _LINK_DETAIL) from None
            finally:
                os.close(directory)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            regular = False
        if not regular:
            os.close(fd)
            raise BlobNotFound(address, str(self), _LINK_DETAIL)
        return fd

    def _dir(self, parts: tuple[str, ...], *, create: bool) -> int:
        """A descriptor of ``root/parts...``, walked one component at a time without following links.

        Raises:
            FileNotFoundError: a component is missing and ``create`` is False.
            _Unsafe: a component is a link or not a directory.
        """
        if create:
            os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        try:
            for part in parts:
                child = self._child_dir(fd, part, create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _child_dir(self, parent: int, part: str, create: bool) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                raise _Unsafe(f"{part!r} inside the store is a link or not a directory; {_LINK_DETAIL}") from None
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o755, dir_fd=parent)
            if self.fsync:
                os.fsync(parent)
        return self._child_dir(parent, part, create=False)

    def _stored(self, directory: int, name: str, size: int) -> bool:
        """Whether a complete blob is already at ``name``: a regular file of the right size. A file
        of another size (torn by a crash without fsync) or a planted link is replaced by the put."""
        try:
            found = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(found.st_mode) and found.st_size == size

    @contextlib.contextmanager
    def _failures(self, operation: str, address: str = "") -> Iterator[None]:
        """Translate unexpected OS errors into `BlobStoreUnavailable` (typed errors pass through)."""
        try:
            yield
        except _Unsafe as exc:
            what = f"{operation} {address}".strip()
            raise BlobStoreUnavailable(str(self), what, exc) from None
        except OSError as exc:
            what = f"{operation} {address}".strip()
            raise BlobStoreUnavailable(str(self), what, exc) from exc


_LINK_DETAIL = "a symbolic link or special file is there, and links inside the store are never followed"


def _split(address: str) -> tuple[str, str]:
    """``sha256/abcd...`` -> (``ab``, ``cd...``): the fan-out directory and the file name."""
    digest = address[len("sha256/") :]
    return digest[:2], digest[2:]


class _TempFile:
    """A blob being written under ``<root>/tmp``: hashed as it is written, renamed into place."""

    def __init__(self, store: LocalBlobStore) -> None:
        self.store = store
        self.hasher = hashlib.sha256()
        self.size = 0
        self.name = f"{_TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        with store._failures("store"):
            self.directory = store._dir(("tmp",), create=True)
            try:
                self.fd: int | None = os.open(self.name, _WRITE_FLAGS, _BLOB_MODE, dir_fd=self.directory)
            except BaseException:
                os.close(self.directory)
                raise

    def write(self, data: bytes | bytearray | memoryview, *, hash: bool = True) -> None:
        """Append ``data``; ``hash=False`` when the caller already knows the address."""
        assert self.fd is not None
        view = memoryview(data).cast("B")
        if hash:
            self.hasher.update(view)
        self.size += view.nbytes
        with self.store._failures("store"):
            while view:
                written = os.write(self.fd, view)
                view = view[written:]

    def commit(self, directory: int, name: str) -> None:
        """Flush, rename to ``name`` in ``directory`` (replacing whatever is there, a link included)."""
        assert self.fd is not None
        if self.store.fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        os.replace(self.name, name, src_dir_fd=self.directory, dst_dir_fd=directory)
        if self.store.fsync:
            os.fsync(directory)
        os.close(self.directory)
        self.directory = -1

    def discard(self) -> None:
        """Remove the temporary file (idempotent, never raises)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.directory >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.name, dir_fd=self.directory)
            with contextlib.suppress(OSError):
                os.close(self.directory)
            self.directory = -1
