"""The `BlobStore` contract, run against every backend: a local directory, fsspec ``memory://`` and
fsspec ``file://``.

Each backend is a `Backend`: how to build the store, and where its objects lie (the layout
``sha256/<2 hex>/<62 hex>`` that both backends document), so a test can look at what is stored,
damage a blob, or plant a link without going through the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import fsspec
import pytest

from catalog import FsspecBlobStore, LocalBlobStore
from engine.errors import BlobNotFound, BlobStoreUnavailable, CorruptBlob, InvalidBlobAddress
from engine.interfaces import BlobStore, blob_address, blob_url

MiB = 1 << 20


@dataclass
class Backend:
    """A blob store under test and a view of its storage that bypasses it."""

    kind: str
    store: BlobStore
    fs: fsspec.AbstractFileSystem
    root: str

    def path(self, address: str) -> str:
        digest = address.removeprefix("sha256/")
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:]}"

    def files(self) -> list[str]:
        """Every file under the store's root (temporary ones included), relative to it."""
        if not self.fs.exists(self.root):
            return []
        return sorted(p.removeprefix(self.root.rstrip("/") + "/") for p in self.fs.find(self.root))

    def blob_files(self) -> list[str]:
        return [f for f in self.files() if f.startswith("sha256/")]

    @property
    def on_disk(self) -> bool:
        return self.kind in ("local", "file")


@pytest.fixture(params=["local", "memory", "file"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind = request.param
    if kind == "local":
        root = tmp_path / "blobs"
        store: BlobStore = LocalBlobStore(root)
        fs, path = fsspec.filesystem("file"), str(root)
    elif kind == "memory":
        store = FsspecBlobStore(f"memory://blobtest-{uuid.uuid4().hex}")
        fs, path = fsspec.core.url_to_fs(store.url)
    else:
        store = FsspecBlobStore((tmp_path / "fsblobs").as_uri())
        fs, path = fsspec.core.url_to_fs(store.url)
    async with store:
        yield Backend(kind, store, fs, path.rstrip("/"))
    if kind == "memory" and fs.exists(path):
        fs.rm(path, recursive=True)  # the memory file system is global: free what the test stored


def plant_link(path: str | Path, target: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).symlink_to(target, target_is_directory=target.is_dir())


def exists(path: str | Path) -> bool:
    return Path(path).exists()


def is_link(path: str | Path) -> bool:
    return Path(path).is_symlink()


def on_disk_only(backend: Backend) -> None:
    if not backend.on_disk:
        pytest.skip("symbolic links exist only on a local disk")


def pseudo_random_chunks(total: int, chunk: int = MiB, seed: bytes = b"seed") -> Iterator[bytes]:
    """Deterministic incompressible chunks, made one at a time (the whole value never exists)."""
    block = hashlib.sha512(seed).digest() * (chunk // 64 + 1)
    for i in range(0, total, chunk):
        size = min(chunk, total - i)
        yield hashlib.sha256(i.to_bytes(8, "big") + seed).digest()[:8] + block[8:size]


def address_of_chunks(chunks: Iterator[bytes]) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return "sha256/" + hasher.hexdigest(), size


async def collect(store: BlobStore, address: str, **options: object) -> bytes:
    return b"".join([chunk async for chunk in store.open(address, **options)])  # type: ignore[arg-type]


# --- round trip, address, dedup ----------------------------------------------------------------------


async def test_round_trip_and_address_format(backend: Backend) -> None:
    store = backend.store
    data = b"hello, blobs" * 1000

    address = await store.put(data)

    assert re.fullmatch(r"sha256/[0-9a-f]{64}", address)
    assert address == "sha256/" + hashlib.sha256(data).hexdigest() == blob_address(data)
    assert await store.get(address) == data
    assert await store.get(blob_url(address)) == data  # the URL form names the same blob
    assert await store.exists(address)
    assert await store.size(address) == len(data)
    assert await collect(store, address, chunk_size=1000) == data
    assert backend.blob_files() == [backend.path(address).removeprefix(backend.root + "/")]


async def test_empty_value(backend: Backend) -> None:
    address = await backend.store.put(b"")

    assert address == blob_address(b"")
    assert await backend.store.get(address) == b""
    assert await backend.store.size(address) == 0
    assert await collect(backend.store, address) == b""


async def test_put_accepts_bytes_like_values(backend: Backend) -> None:
    data = bytes(range(256)) * 10
    addresses = {
        await backend.store.put(data),
        await backend.store.put(bytearray(data)),
        await backend.store.put(memoryview(data)),
    }
    assert addresses == {blob_address(data)}
    with pytest.raises(TypeError, match="bytes-like"):
        await backend.store.put("text")  # type: ignore[arg-type]


async def test_same_bytes_are_stored_once(backend: Backend) -> None:
    data = os.urandom(100_000)

    first = await backend.store.put(data)
    second = await backend.store.put(data)
    streamed = await backend.store.put_stream([data[:10], data[10:5000], data[5000:]])

    assert first == second == streamed
    assert len(backend.blob_files()) == 1
    assert [f for f in backend.files() if not f.startswith("sha256/")] == []  # no temporary left


async def test_put_stream_takes_sync_and_async_iterables(backend: Backend) -> None:
    parts = [b"a" * 10, bytearray(b"b" * 20), memoryview(b"c" * 30), b""]

    async def agen() -> AsyncIterator[bytes]:
        for part in parts:
            yield part  # type: ignore[misc]

    from_sync = await backend.store.put_stream(parts)  # type: ignore[arg-type]
    from_async = await backend.store.put_stream(agen())

    assert from_sync == from_async == blob_address(b"a" * 10 + b"b" * 20 + b"c" * 30)
    assert await backend.store.get(from_sync) == b"a" * 10 + b"b" * 20 + b"c" * 30


async def test_put_stream_rejects_what_is_not_chunks(backend: Backend) -> None:
    with pytest.raises(TypeError, match="bytes-like, got str"):
        await backend.store.put_stream(["text"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="use put"):
        await backend.store.put_stream(b"bytes")
    assert backend.files() == []


# --- atomicity -----------------------------------------------------------------------------------


async def test_interrupted_put_stream_leaves_no_blob(backend: Backend) -> None:
    def failing() -> Iterator[bytes]:
        yield b"x" * MiB
        yield b"y" * (5 * MiB)  # past one write: some bytes reached the temporary object
        raise RuntimeError("producer failed midway")

    with pytest.raises(RuntimeError, match="producer failed midway"):
        await backend.store.put_stream(failing())

    assert backend.files() == []
    for prefix in (b"x" * MiB, b"x" * MiB + b"y" * (5 * MiB)):
        assert not await backend.store.exists(blob_address(prefix))


async def test_cancelled_put_stream_leaves_no_blob(backend: Backend) -> None:
    written = anyio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        yield b"z" * (5 * MiB)
        written.set()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async with anyio.create_task_group() as tg:
        tg.start_soon(backend.store.put_stream, stalling())
        await written.wait()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()

    assert backend.files() == []
    assert not await backend.store.exists(blob_address(b"z" * (5 * MiB)))


async def test_concurrent_puts_of_the_same_bytes(backend: Backend) -> None:
    data = os.urandom(3 * MiB)
    results: list[str] = []

    async def put_whole() -> None:
        results.append(await backend.store.put(data))

    async def put_chunks() -> None:
        results.append(await backend.store.put_stream(data[i : i + 300_000] for i in range(0, len(data), 300_000)))

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(put_whole if i % 2 else put_chunks)

    assert set(results) == {blob_address(data)} and len(results) == 16
    assert await backend.store.get(results[0]) == data
    assert len(backend.blob_files()) == 1
    assert [f for f in backend.files() if not f.startswith("sha256/")] == []


async def test_readers_never_see_part_of_a_blob(backend: Backend) -> None:
    data = os.urandom(8 * MiB)
    address = blob_address(data)
    seen: set[int] = set()
    done = anyio.Event()

    async def reader() -> None:
        while not done.is_set():
            if await backend.store.exists(address):
                seen.add(len(await backend.store.get(address)))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await backend.store.put_stream(data[i : i + MiB] for i in range(0, len(data), MiB))
        done.set()

    assert seen <= {len(data)}


# --- streaming -----------------------------------------------------------------------------------


async def test_streams_a_50_mb_value_without_holding_it_twice(backend: Backend) -> None:
    total = 50 * MiB
    expected, _ = address_of_chunks(pseudo_random_chunks(total))

    # peaks are measured above what was held before each step (a memory:// store holds the value)
    tracemalloc.start()
    try:
        address = await backend.store.put_stream(pseudo_random_chunks(total))
        held, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        hasher, size, largest = hashlib.sha256(), 0, 0
        async for chunk in backend.store.open(address, chunk_size=MiB):
            hasher.update(chunk)
            size += len(chunk)
            largest = max(largest, len(chunk))
        _, read_peak = tracemalloc.get_traced_memory()
        read_peak -= held
    finally:
        tracemalloc.stop()

    assert address == expected
    assert "sha256/" + hasher.hexdigest() == expected and size == total == await backend.store.size(address)
    assert largest <= MiB
    assert read_peak < 8 * MiB, f"streaming read held {read_peak / MiB:.1f} MiB at once"
    if backend.kind != "memory":  # a memory:// store holds the value itself, in this process
        assert put_peak < 16 * MiB, f"streamed put held {put_peak / MiB:.1f} MiB at once"


async def test_open_checks_its_arguments_before_any_io(backend: Backend) -> None:
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        backend.store.open(blob_address(b"x"), chunk_size=0)
    with pytest.raises(InvalidBlobAddress):
        backend.store.open("sha256/../../etc/passwd")


async def test_stopping_a_stream_early(backend: Backend) -> None:
    data = os.urandom(3 * MiB)
    address = await backend.store.put(data)

    async with contextlib.aclosing(backend.store.open(address, chunk_size=MiB)) as chunks:
        first = await anext(chunks)

    assert first == data[:MiB]


async def test_read_range(backend: Backend) -> None:
    data = bytes(range(256)) * 100
    address = await backend.store.put(data)

    assert await backend.store.read_range(address, 0, 10) == data[:10]
    assert await backend.store.read_range(address, 1000, 5000) == data[1000:6000]
    assert await backend.store.read_range(address, len(data) - 3, 100) == data[-3:]
    assert await backend.store.read_range(address, len(data) + 5, 10) == b""
    assert await backend.store.read_range(address, 7, 0) == b""
    with pytest.raises(ValueError, match="offset >= 0"):
        await backend.store.read_range(address, -1, 10)


# --- missing, invalid, deleted -------------------------------------------------------------------


async def test_missing_blob(backend: Backend) -> None:
    address = blob_address(b"never stored")

    assert not await backend.store.exists(address)
    assert not await backend.store.delete(address)
    for read in (
        backend.store.get(address),
        backend.store.size(address),
        backend.store.read_range(address, 0, 1),
        collect(backend.store, address),
    ):
        with pytest.raises(BlobNotFound, match=re.escape(address)) as caught:
            await read
        assert caught.value.address == address
        assert str(backend.store) in str(caught.value)


BAD_ADDRESSES = [
    "sha256/../../etc/passwd",
    "/etc/passwd",
    "../" + "a" * 64,
    "sha256/" + "a" * 62 + "/..",
    "sha256/ab/" + "c" * 62,
    "md5/" + "a" * 32,
    "sha1/" + "a" * 40,
    "SHA256/" + "a" * 64,
    "sha256/" + "A" * 64,
    "sha256/" + "a" * 63,
    "sha256/" + "a" * 65,
    "sha256/" + "g" * 64,
    " sha256/" + "a" * 64,
    "sha256/" + "a" * 64 + "\n",
    "sha256\\" + "a" * 64,
    "file:///etc/passwd",
    "blob:///etc/passwd",
    "blob://md5/" + "a" * 32,
    "",
]


@pytest.mark.parametrize("bad", BAD_ADDRESSES)
async def test_invalid_addresses_are_rejected(backend: Backend, bad: str) -> None:
    calls = [
        lambda: backend.store.get(bad),
        lambda: backend.store.exists(bad),
        lambda: backend.store.size(bad),
        lambda: backend.store.delete(bad),
        lambda: backend.store.read_range(bad, 0, 10),
    ]
    for call in calls:
        with pytest.raises(InvalidBlobAddress, match="invalid blob address") as caught:
            await call()
        assert caught.value.address == bad
    with pytest.raises(InvalidBlobAddress):
        backend.store.open(bad)


async def test_invalid_address_messages_say_why() -> None:
    store = LocalBlobStore("/nonexistent-never-created")
    cases = {
        "sha256/../../etc/passwd": "names a path",
        "/etc/passwd": "names a path",
        "md5/" + "a" * 32: "algorithm 'md5' is not supported",
        "sha256/" + "A" * 64: "exactly 64 lowercase hex digits",
        "abc": "lacks the 'sha256/' prefix",
    }
    for bad, why in cases.items():
        with pytest.raises(InvalidBlobAddress, match=re.escape(why)):
            await store.get(bad)
    with pytest.raises(InvalidBlobAddress, match="expected a string, got int"):
        await store.get(12)  # type: ignore[arg-type]
    assert not exists("/nonexistent-never-created")


async def test_delete(backend: Backend) -> None:
    data = b"evict me"
    address = await backend.store.put(data)

    assert await backend.store.delete(address)
    assert not await backend.store.exists(address)
    with pytest.raises(BlobNotFound):
        await backend.store.get(address)
    assert not await backend.store.delete(address)
    assert backend.blob_files() == []

    assert await backend.store.put(data) == address  # stored again after eviction
    assert await backend.store.get(address) == data


# --- verification --------------------------------------------------------------------------------


def damage(backend: Backend, address: str, content: bytes) -> None:
    path = backend.path(address)
    if backend.on_disk:
        os.chmod(path, 0o644)
    backend.fs.pipe_file(path, content)


async def test_verification_finds_a_damaged_blob(backend: Backend) -> None:
    data = b"a" * 5000
    address = await backend.store.put(data)
    damage(backend, address, b"b" * 5000)

    with pytest.raises(CorruptBlob, match=f"blob {address} in blob store .* is corrupt") as caught:
        await backend.store.get(address, verify=True)
    assert caught.value.actual == blob_address(b"b" * 5000)
    with pytest.raises(CorruptBlob):
        await collect(backend.store, address, chunk_size=1000, verify=True)
    assert await backend.store.get(address, verify=False) == b"b" * 5000
    assert await backend.store.read_range(address, 0, 3) == b"bbb"  # never verified


async def test_a_torn_blob_is_replaced_by_the_next_put(backend: Backend) -> None:
    data = os.urandom(10_000)
    address = await backend.store.put(data)
    damage(backend, address, data[:4000])  # a file cut short, as a crash without fsync leaves

    assert await backend.store.put(data) == address
    assert await backend.store.get(address, verify=True) == data


async def test_default_verification(backend: Backend) -> None:
    # documented defaults: a local directory does not re-hash reads, a store over fsspec does
    assert backend.store.verify_reads is (backend.kind != "local")


# --- names cannot escape the store ---------------------------------------------------------------


async def test_a_planted_link_at_a_blob_path_is_not_followed(backend: Backend, tmp_path: Path) -> None:
    on_disk_only(backend)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside the store")
    data = b"the value"
    address = blob_address(data)
    path = backend.path(address)
    plant_link(path, secret)

    assert not await backend.store.exists(address)
    with pytest.raises(BlobNotFound, match="never followed"):
        await backend.store.get(address)
    with pytest.raises(BlobNotFound):
        await collect(backend.store, address)
    with pytest.raises(BlobNotFound):
        await backend.store.size(address)

    assert await backend.store.put(data) == address  # replaces the link itself
    assert not is_link(path)
    assert await backend.store.get(address) == data
    assert secret.read_bytes() == b"outside the store"


async def test_a_planted_directory_link_is_not_followed(backend: Backend, tmp_path: Path) -> None:
    on_disk_only(backend)
    outside = tmp_path / "outside"
    outside.mkdir()
    data = b"another value"
    address = blob_address(data)
    path = Path(backend.path(address))
    (outside / path.name).write_bytes(data)  # a file that would be found through the link
    plant_link(path.parent, outside)

    assert not await backend.store.exists(address)
    with pytest.raises(BlobNotFound):
        await backend.store.get(address)
    assert not await backend.store.delete(address)
    assert (outside / path.name).read_bytes() == data  # delete did not reach through the link
    with pytest.raises(BlobStoreUnavailable, match="symbolic link"):
        await backend.store.put(b"another value")
    assert sorted(p.name for p in outside.iterdir()) == [path.name]


async def test_a_planted_temp_directory_link_is_not_written_through(backend: Backend, tmp_path: Path) -> None:
    on_disk_only(backend)
    outside = tmp_path / "outside-tmp"
    outside.mkdir()
    temp_dir = Path(backend.root) / "tmp"
    if temp_dir.exists():
        temp_dir.rmdir()
    plant_link(temp_dir, outside)

    with pytest.raises(BlobStoreUnavailable, match="symbolic link"):
        await backend.store.put_stream([b"streamed" * 1000])
    with pytest.raises(BlobStoreUnavailable):
        await backend.store.put(b"whole value" * 1000)  # a local put stages its file in tmp/ too
    assert list(outside.iterdir()) == []


# --- lifecycle -----------------------------------------------------------------------------------


async def test_start_and_close_are_idempotent(backend: Backend) -> None:
    await backend.store.start()
    await backend.store.start()
    address = await backend.store.put(b"still works")
    await backend.store.close()
    await backend.store.close()
    assert address == blob_address(b"still works")
