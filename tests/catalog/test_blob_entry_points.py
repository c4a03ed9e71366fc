"""Both blob stores are found by name through the ``slipstream.blobstores`` entry point (DESIGN section 8)."""

from __future__ import annotations

from importlib.metadata import entry_points

from catalog import FsspecBlobStore, LocalBlobStore
from engine.interfaces import BlobStore


def test_blob_stores_register_by_name() -> None:
    found = {ep.name: ep.load() for ep in entry_points(group="slipstream.blobstores")}

    assert found["local"] is LocalBlobStore
    assert found["fsspec"] is FsspecBlobStore
    assert all(issubclass(cls, BlobStore) for cls in found.values())
    assert LocalBlobStore.name == "local" and FsspecBlobStore.name == "fsspec"
