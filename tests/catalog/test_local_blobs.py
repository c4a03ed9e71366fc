"""What `LocalBlobStore` adds to the blob store contract: its layout on disk, read-only files,
the sweep of temporary files left by crashed puts, and special files planted in the store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from catalog import LocalBlobStore
from engine.errors import BlobNotFound
from engine.interfaces import blob_address


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_temp(root: Path, name: str, mtime: float) -> Path:
    path = root / "tmp" / name
    path.write_bytes(b"partial")
    os.utime(path, (mtime, mtime))
    return path


async def test_layout_fans_out_by_the_first_two_hex_digits(tmp_path: Path) -> None:
    root = tmp_path / "state" / "blobs"
    async with LocalBlobStore(root) as store:
        address = await store.put(b"payload")

    digest = address.removeprefix("sha256/")
    assert files_under(root) == [f"sha256/{digest[:2]}/{digest[2:]}"]
    assert mode_of(root / "sha256" / digest[:2] / digest[2:]) == 0o444  # blobs are immutable


async def test_works_without_start_and_without_fsync(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)

    address = await store.put_stream([b"a", b"b"])

    assert await store.get(address) == b"ab"
    assert str(store) == str(tmp_path / "blobs")
    assert repr(store) == f"LocalBlobStore({str(tmp_path / 'blobs')!r})"


async def test_start_removes_stale_temporary_files_only(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    now = 1_000_000_000.0
    async with LocalBlobStore(root):
        pass
    stale = make_temp(root, ".put-1-stale", now - 25 * 3600)
    fresh = make_temp(root, ".put-2-fresh", now - 3600)  # maybe a put in progress in another process
    other = make_temp(root, "not-ours", now - 100 * 3600)

    await LocalBlobStore(root, clock=lambda: now).start()

    assert not stale.exists()
    assert fresh.exists() and other.exists()


async def test_a_planted_fifo_is_not_opened(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    address = blob_address(b"x")
    digest = address.removeprefix("sha256/")
    fan = tmp_path / "blobs" / "sha256" / digest[:2]
    fan.mkdir(parents=True)
    os.mkfifo(fan / digest[2:])

    assert not await store.exists(address)
    with pytest.raises(BlobNotFound, match="never followed"):
        await store.get(address)  # would block forever if opened without O_NONBLOCK
    assert await store.put(b"x") == address
    assert await store.get(address) == b"x"


async def test_the_root_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real-blobs"
    real.mkdir()
    (tmp_path / "blobs").symlink_to(real, target_is_directory=True)

    async with LocalBlobStore(tmp_path / "blobs") as store:
        address = await store.put(b"through a configured link")

    assert await LocalBlobStore(real).get(address) == b"through a configured link"
