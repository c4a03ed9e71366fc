"""The catalog: cache keys, datasets, artifacts, reservations, lineage, and blob stores (DESIGN section 9).

Blob stores (`engine.interfaces.BlobStore`), registered under the ``slipstream.blobstores`` entry
point: `LocalBlobStore` (``local``, a directory, the embedded default) and `FsspecBlobStore`
(``fsspec``, any fsspec URL; needs the ``fsspec`` extra, imported only when one is built).
"""

from __future__ import annotations

from catalog._fsspec_blobs import FsspecBlobStore
from catalog._local_blobs import LocalBlobStore

__all__ = ["FsspecBlobStore", "LocalBlobStore"]
