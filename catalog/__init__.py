"""The catalog: cache keys, datasets, artifacts, reservations, lineage, and blob stores (DESIGN section 9).

Catalogs (`engine.interfaces.Catalog`), registered under the ``slipstream.catalogs`` entry point:
`SqliteCatalog` (``sqlite``, a file under the state directory, the embedded default) and
`PostgresCatalog` (``postgres``, tables next to the event log in server mode). `lineage` walks the
edges a catalog holds into a graph.

Blob stores (`engine.interfaces.BlobStore`), registered under the ``slipstream.blobstores`` entry
point: `LocalBlobStore` (``local``, a directory, the embedded default) and `FsspecBlobStore`
(``fsspec``, any fsspec URL; needs the ``fsspec`` extra, imported only when one is built).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from catalog._fsspec_blobs import FsspecBlobStore
from catalog._local_blobs import LocalBlobStore
from catalog._sqlite_catalog import SqliteCatalog

if TYPE_CHECKING:
    from catalog._postgres_catalog import PostgresCatalog

__all__ = ["FsspecBlobStore", "LocalBlobStore", "PostgresCatalog", "SqliteCatalog"]


def __getattr__(name: str) -> Any:
    # asyncpg loads only when a server catalog is asked for: an embedded engine never needs it
    if name == "PostgresCatalog":
        from catalog._postgres_catalog import PostgresCatalog

        return PostgresCatalog
    raise AttributeError(f"module 'catalog' has no attribute {name!r}")
