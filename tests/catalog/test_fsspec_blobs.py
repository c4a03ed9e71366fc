"""What `FsspecBlobStore` adds to the blob store contract: configuration errors that say what to install."""

from __future__ import annotations

import sys
import uuid

import fsspec
import pytest

from catalog import FsspecBlobStore
from engine.errors import ConfigError


def test_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not one fsspec understands"):
        FsspecBlobStore("nosuchprotocol://bucket/blobs")


def test_missing_fsspec_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "fsspec" or m.startswith("fsspec.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec now raises ImportError

    with pytest.raises(ConfigError, match=r"pip install 'slipstream\[fsspec\]'"):
        FsspecBlobStore("memory://blobs")


def test_describes_itself_by_url() -> None:
    store = FsspecBlobStore("memory://described")
    assert str(store) == "memory://described"
    assert repr(store) == "FsspecBlobStore('memory://described')"
    assert store.verify_reads
    assert not FsspecBlobStore("memory://described", verify=False).verify_reads


async def test_file_systems_without_atomic_writes_stage_under_tmp() -> None:
    url = f"memory://staged-{uuid.uuid4().hex}"
    store = FsspecBlobStore(url)
    store._atomic_writes = False  # as for sftp://, hdfs://: stage, then move into place
    fs, root = fsspec.core.url_to_fs(url)
    try:
        async with store:
            whole = await store.put(b"w" * 1000)
            streamed = await store.put_stream([b"s" * 10, b"t" * 10])
            assert await store.get(whole) == b"w" * 1000
            assert await store.get(streamed) == b"s" * 10 + b"t" * 10
        stored = sorted(p.removeprefix(root + "/") for p in fs.find(root))
        assert all(p.startswith("sha256/") for p in stored) and len(stored) == 2
    finally:
        fs.rm(root, recursive=True)
