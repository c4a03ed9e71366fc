"""Byte-level literal operations: what the control loop does with values without decoding them.

A literal is canonical msgpack (see the SDK's codec, ``engine._literals``). The planner splits map
inputs and assembles list and dict bindings by byte surgery, never by decoding and re-encoding
values, so that it needs neither the user's types nor their code. This module is part of the floor:
it imports nothing of ours outside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import msgspec

from engine.errors import TypeMismatch
from engine.models import Binding, DictBinding, ListBinding, LiteralBinding, WorkflowSpec

if TYPE_CHECKING:
    from engine.interfaces import BlobStore, TaskStatus

__all__ = [
    "BLOB_REF",
    "INLINE_LIMIT",
    "ITEM_REF",
    "MANIFEST",
    "MANIFEST_CHUNK_ITEMS",
    "NIL_LITERAL",
    "BlobCache",
    "BlobResolver",
    "blob_digest_address",
    "combine_hashes",
    "inputs_hash",
    "join_dict_literal",
    "join_list_literal",
    "literal_hash",
    "manifest_items",
    "may_hold_references",
    "offload",
    "offload_logs",
    "offload_outputs",
    "offload_spec",
    "offload_status",
    "references",
    "split_list_literal",
    "store_blobs",
    "substitute",
]

NIL_LITERAL = b"\xc0"  # msgpack nil: the literal of None

# Items are already canonical literals wrapped in Raw; only the container needs deterministic order.
_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


def split_list_literal(data: bytes) -> list[bytes]:
    """Split the literal of a list into the literals of its items, without decoding them.

    Args:
        data: the literal of a ``list[T]`` (or tuple).

    Returns:
        One literal per item, in order (for a manifest, references to its items).

    Raises:
        TypeMismatch: ``data`` is not a msgpack array or a manifest.
    """
    manifest = manifest_items(data)
    if manifest is not None:
        return manifest  # item references: no chunk is read
    try:
        items = msgspec.msgpack.decode(data, type=list[msgspec.Raw])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TypeMismatch(f"literal is not a list: {exc}") from None
    return [bytes(item) for item in items]


def join_list_literal(items: Iterable[bytes]) -> bytes:
    """Assemble the literal of a list from the literals of its items.

    Args:
        items: one literal per item.

    Returns:
        The literal of the list (a msgpack array holding the items verbatim).
    """
    return _ENCODER.encode([msgspec.Raw(item) for item in items])


def join_dict_literal(items: dict[str, bytes]) -> bytes:
    """Assemble the literal of a ``dict[str, T]`` from the literals of its values (keys sorted).

    Args:
        items: one literal per key.

    Returns:
        The literal of the dict, canonical like every literal.
    """
    return _ENCODER.encode({key: msgspec.Raw(items[key]) for key in sorted(items)})


# --- values kept in the blob store ------------------------------------------------------------------
#
# A literal above the inline limit is not written into events: it is stored as a content-addressed
# blob and the event holds a small reference literal, a msgpack extension. Being a complete msgpack
# value, a reference can stand anywhere a literal can, an item of a list included, so joins and
# splits keep working on bytes. Three kinds:
#
# - BLOB_REF: the whole literal is the blob ``sha256/<digest>``.
# - MANIFEST: a large list, stored as chunk blobs, each the msgpack array of some of its items: the
#   payload is ``[count, [[digest, items], ...]]``. It is split (a map's input) without reading a
#   chunk: item ``i`` becomes an ITEM_REF.
# - ITEM_REF: item ``offset`` of the chunk blob ``digest``: payload ``[digest, offset]``.
#
# Extension code 1 is the codec's pickled leaf (``engine._literals``); references never nest in it.

BLOB_REF = 2
MANIFEST = 3
ITEM_REF = 4
INLINE_LIMIT = 64 * 1024  # bytes: the default above which a literal goes to the blob store
MANIFEST_CHUNK_ITEMS = 4096  # items per chunk blob of a manifest
_REF_CODES = frozenset({BLOB_REF, MANIFEST, ITEM_REF})
_PLAIN = msgspec.msgpack.Encoder()


def blob_digest_address(digest: bytes) -> str:
    """The blob store address of a 32-byte sha256 digest."""
    return f"sha256/{digest.hex()}"


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def offload(literal: bytes, limit: int = INLINE_LIMIT) -> tuple[bytes, dict[str, bytes]]:
    """The literal to keep inline for ``literal``, and the blobs to store first (pure: no I/O).

    At or under ``limit`` bytes the literal stays as it is. Above it, a list becomes a manifest of
    chunk blobs (its own large items offloaded first), anything else a reference to one blob.

    Returns:
        ``(inline literal, {address: blob bytes})``; the blobs must be stored before the inline
        literal is written anywhere durable.
    """
    if len(literal) <= limit:
        return literal, {}
    blobs: dict[str, bytes] = {}
    if literal[:1] and (0x90 <= literal[0] <= 0x9F or literal[0] in (0xDC, 0xDD)):
        items = split_list_literal(literal)
        inline_items = []
        for item in items:
            kept, more = offload(item, limit)
            inline_items.append(kept)
            blobs.update(more)
        chunks = []
        for start in range(0, len(inline_items), MANIFEST_CHUNK_ITEMS):
            chunk = join_list_literal(inline_items[start : start + MANIFEST_CHUNK_ITEMS])
            digest = _digest(chunk)
            blobs[blob_digest_address(digest)] = chunk
            chunks.append([digest, min(MANIFEST_CHUNK_ITEMS, len(inline_items) - start)])
        payload = _PLAIN.encode([len(inline_items), chunks])
        return _PLAIN.encode(msgspec.msgpack.Ext(MANIFEST, payload)), blobs
    digest = _digest(literal)
    blobs[blob_digest_address(digest)] = literal
    return _PLAIN.encode(msgspec.msgpack.Ext(BLOB_REF, digest)), blobs


def offload_spec(spec: WorkflowSpec, limit: int = INLINE_LIMIT) -> tuple[WorkflowSpec, dict[str, bytes]]:
    """``spec`` with every constant (literal bindings, input defaults) above ``limit`` offloaded
    (pure), so that a spec written into an event holds no large value."""
    blobs: dict[str, bytes] = {}

    def kept(literal: bytes) -> bytes:
        inline, more = offload(literal, limit)
        blobs.update(more)
        return inline

    def binding(value: Binding) -> Binding:
        match value:
            case LiteralBinding(value=literal) if len(literal) > limit:
                return LiteralBinding(kept(literal))
            case ListBinding(items=items):
                return ListBinding([binding(item) for item in items])
            case DictBinding(items=items):
                return DictBinding({key: binding(item) for key, item in items.items()})
        return value

    if not _has_large_constants(spec, limit):
        return spec, blobs
    nodes = [
        msgspec.structs.replace(node, inputs={name: binding(b) for name, b in node.inputs.items()})
        for node in spec.nodes
    ]
    subworkflows = {}
    for name, sub in spec.subworkflows.items():
        subworkflows[name], more = offload_spec(sub, limit)
        blobs.update(more)
    defaults = {name: kept(literal) for name, literal in spec.defaults.items()}
    return msgspec.structs.replace(spec, nodes=nodes, subworkflows=subworkflows, defaults=defaults), blobs


def _has_large_constants(spec: WorkflowSpec, limit: int) -> bool:
    # a spec is encoded whole into events anyway: its size bounds every constant in it
    return len(msgspec.msgpack.encode(spec)) > limit


def _ext(literal: bytes) -> msgspec.msgpack.Ext | None:
    """The extension a literal is, if it is one of ours."""
    if not literal or literal[0] not in (0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8):
        return None
    try:
        value = msgspec.msgpack.decode(literal)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, msgspec.msgpack.Ext) and value.code in _REF_CODES else None


def manifest_items(literal: bytes) -> list[bytes] | None:
    """Item literals of a manifest (ITEM_REFs, no I/O), or None if ``literal`` is not one."""
    ext = _ext(literal)
    if ext is None or ext.code != MANIFEST:
        return None
    _count, chunks = msgspec.msgpack.decode(ext.data)
    return [
        _PLAIN.encode(msgspec.msgpack.Ext(ITEM_REF, _PLAIN.encode([digest, offset])))
        for digest, items in chunks
        for offset in range(items)
    ]


def may_hold_references(literal: bytes) -> bool:
    """Whether ``literal`` may contain blob references (a quick byte test; false positives only)."""
    return _EXT_MARKER.search(literal) is not None


_EXT_MARKER = re.compile(rb"[\xc7-\xc9\xd4-\xd8]")  # the msgpack extension type headers


def references(literal: bytes) -> set[str]:
    """The addresses of the blobs ``literal`` refers to directly (not inside those blobs)."""
    found: set[str] = set()
    if not may_hold_references(literal):
        return found
    ext = _ext(literal)
    if ext is not None and ext.code == ITEM_REF:  # a map element's input: the common case, made short
        return {blob_digest_address(msgspec.msgpack.decode(ext.data)[0])}

    def hook(code: int, data: memoryview) -> object:
        if code == BLOB_REF:
            found.add(blob_digest_address(bytes(data)))
        elif code == MANIFEST:
            for digest, _items in msgspec.msgpack.decode(data)[1]:
                found.add(blob_digest_address(digest))
        elif code == ITEM_REF:
            found.add(blob_digest_address(msgspec.msgpack.decode(data)[0]))
        return None

    msgspec.msgpack.decode(literal, ext_hook=hook)
    return found


def substitute(literal: bytes, blobs: Mapping[str, bytes], chunks: dict[str, list[bytes]] | None = None) -> bytes:
    """``literal`` with every reference replaced by the value it names (pure; ``blobs`` must
    hold each blob reachable from it: see `references`, applied again to what they hold).

    Args:
        literal: the literal.
        blobs: blob contents by address.
        chunks: items of manifest chunks already split, by address; pass one dict for many
            literals that share chunks (the elements of a map), so each chunk is split once.

    Raises:
        KeyError: a referenced blob is missing from ``blobs``.
    """
    if not may_hold_references(literal):
        return literal
    chunks = {} if chunks is None else chunks
    ext = _ext(literal)
    if ext is not None and ext.code == ITEM_REF:  # a map element's input: the common case, made short
        digest, offset = msgspec.msgpack.decode(ext.data)
        address = blob_digest_address(digest)
        if address not in chunks:
            chunks[address] = split_list_literal(blobs[address])
        return substitute(chunks[address][offset], blobs, chunks)

    def chunk_items(digest: bytes) -> list[bytes]:
        address = blob_digest_address(digest)
        if address not in chunks:
            chunks[address] = split_list_literal(blobs[address])
        return chunks[address]

    def hook(code: int, data: memoryview) -> object:
        if code == BLOB_REF:
            return msgspec.Raw(substitute(blobs[blob_digest_address(bytes(data))], blobs, chunks))
        if code == MANIFEST:
            items = [item for digest, _n in msgspec.msgpack.decode(data)[1] for item in chunk_items(digest)]
            return [msgspec.Raw(substitute(item, blobs, chunks)) for item in items]
        if code == ITEM_REF:
            digest, offset = msgspec.msgpack.decode(data)
            return msgspec.Raw(substitute(chunk_items(digest)[offset], blobs, chunks))
        return msgspec.msgpack.Ext(code, bytes(data))  # a pickled leaf: kept as it is

    return _ENCODER.encode(msgspec.msgpack.decode(literal, ext_hook=hook))


# --- hashing for cache keys -------------------------------------------------------------------------
#
# A cache key must be the same for equal values in any process. Literals are canonical already (the
# codec sorts dicts, normalises through the declared type, writes aware datetimes as UTC
# timestamps and decimals without trailing zeros); three cases are left to the hash: a float -0.0,
# equal to 0.0 but written with its sign bit; values pickled from ``__main__``, whose pickles differ
# between processes, hashed by the stable digest the codec stores beside them; and values in the
# blob store, which hash by their content, so that a value offloaded and inline give one key.

_NEG_ZERO_MARKERS = (b"\xcb\x80\x00\x00\x00\x00\x00\x00\x00", b"\xca\x80\x00\x00\x00")


_HASHED_PICKLE = 5  # the codec's pickled leaf with a stable digest (engine._literals)


def _canonical_for_hash(literal: bytes) -> bytes:
    """``literal`` with every float -0.0 written as 0.0 and every pickled leaf that carries a
    stable digest replaced by it (itself when it holds neither)."""
    if not any(marker in literal for marker in _NEG_ZERO_MARKERS) and not may_hold_references(literal):
        return literal

    def ext_hook(code: int, data: memoryview) -> object:
        if code == _HASHED_PICKLE:
            return msgspec.msgpack.Ext(code, msgspec.msgpack.decode(data)[0])
        return msgspec.msgpack.Ext(code, bytes(data))

    def fix(value: object) -> object:
        if isinstance(value, float):
            return 0.0 if value == 0.0 else value
        if isinstance(value, list):
            return [fix(item) for item in value]
        if isinstance(value, dict):
            return {fix(k): fix(v) for k, v in value.items()}
        return value

    try:
        decoded = msgspec.msgpack.decode(literal, ext_hook=ext_hook)
    except msgspec.DecodeError:
        return literal
    # the plain encoder keeps map order as decoded: the literal's canonical order
    return _PLAIN.encode(fix(decoded))


def literal_hash(literal: bytes) -> str:
    """A content hash of a literal for cache keys: sha256 hex, equal for equal values.

    A reference to one blob hashes as the blob's content (its address is that hash), so a value
    hashes the same inline or offloaded; manifests and nested references hash by the content
    addresses they hold.
    """
    ext = _ext(literal)
    if ext is not None and ext.code == BLOB_REF:
        return bytes(ext.data).hex()
    return hashlib.sha256(_canonical_for_hash(literal)).hexdigest()


def inputs_hash(inputs: Mapping[str, bytes], ignore: Iterable[str] = ()) -> str:
    """The hash of a node's input literals minus ``ignore`` (names sorted; sha256 hex)."""
    skipped = set(ignore)
    return combine_hashes({name: literal_hash(value) for name, value in inputs.items() if name not in skipped})


def combine_hashes(hashes: Mapping[str, str]) -> str:
    """`inputs_hash` from the inputs' `literal_hash` values (a map hashes its broadcast inputs once)."""
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{len(name)}:{name}=".encode())
        digest.update(hashes[name].encode())
    return digest.hexdigest()


# --- with a store: resolve references, offload values (the only I/O here, through the store) -------


async def store_blobs(store: BlobStore, blobs: Mapping[str, bytes]) -> None:
    """Store blobs made by `offload` (concurrently; a blob already there costs a hash)."""
    await asyncio.gather(*(store.put(data) for data in blobs.values()))


async def offload_outputs(outputs: Mapping[str, bytes], store: BlobStore, limit: int) -> dict[str, bytes]:
    """``outputs`` with each literal above ``limit`` stored and replaced by its reference."""
    result: dict[str, bytes] = {}
    blobs: dict[str, bytes] = {}
    for name, literal in outputs.items():
        result[name], more = offload(literal, limit)
        blobs.update(more)
    if blobs:
        await store_blobs(store, blobs)
    return result


async def offload_status(status: TaskStatus, store: BlobStore, limit: int) -> TaskStatus:
    """An executor's status with every output above ``limit`` in the store (a chunk's element
    outputs included), so that no event written from it holds a large value."""
    outputs = await offload_outputs(status.outputs, store, limit) if status.outputs else status.outputs
    dynamic_spec = status.dynamic_spec
    if dynamic_spec is not None and len(dynamic_spec) > limit:
        spec, blobs = offload_spec(msgspec.msgpack.decode(dynamic_spec, type=WorkflowSpec), limit)
        await store_blobs(store, blobs)
        dynamic_spec = msgspec.msgpack.encode(spec)
    elements = status.elements
    if any(r.output is not None and len(r.output) > limit for r in elements):
        blobs: dict[str, bytes] = {}
        kept = []
        for result in elements:
            if result.output is not None and len(result.output) > limit:
                output, more = offload(result.output, limit)
                blobs.update(more)
                result = msgspec.structs.replace(result, output=output)
            kept.append(result)
        await store_blobs(store, blobs)
        elements = kept
    return msgspec.structs.replace(status, outputs=outputs, elements=elements, dynamic_spec=dynamic_spec)


async def offload_logs(status: TaskStatus, store: BlobStore) -> TaskStatus:
    """An executor's status with the text of its logs (and of each chunk element's) replaced by
    the blob address of that text, as events record them."""
    logs = await store.put(status.logs.encode()) if status.logs else ""
    elements = status.elements
    if any(result.logs for result in elements):
        elements = [
            msgspec.structs.replace(result, logs=await store.put(result.logs.encode())) if result.logs else result
            for result in elements
        ]
    return msgspec.structs.replace(status, logs=logs, elements=elements)


class BlobCache:
    """Blobs and split manifest chunks kept between attempts, least recently used first out.

    Blobs are named by their content, so a cached one is never stale. A worker running a map
    gets many small chunk requests whose elements point into the same few manifest chunks;
    without this each request would read and split those chunks again (the cost then grows with
    the size of the map, not with the work).
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._chunks: dict[str, list[bytes]] = {}
        self._size = 0

    def blob(self, address: str) -> bytes | None:
        data = self._blobs.get(address)
        if data is not None:
            self._blobs.move_to_end(address)
        return data

    def chunk(self, address: str) -> list[bytes] | None:
        return self._chunks.get(address) if address in self._blobs else None

    def keep(self, address: str, data: bytes, chunk: list[bytes] | None = None) -> None:
        """Remember ``data`` (and the items it splits into, for a manifest chunk)."""
        if len(data) > self.max_bytes // 4:
            return  # one huge value would flush everything else
        if address not in self._blobs:
            self._blobs[address] = data
            self._size += len(data)
        if chunk is not None and address not in self._chunks:
            self._chunks[address] = chunk
            self._size += len(data)
        while self._size > self.max_bytes:
            evicted, old = self._blobs.popitem(last=False)
            self._size -= len(old) * (2 if self._chunks.pop(evicted, None) is not None else 1)


class BlobResolver:
    """Replaces references in literals by the values they name, reading each blob once.

    One resolver serves one attempt or chunk: the elements of a chunk usually refer to the same
    few chunk blobs of a manifest. With a `BlobCache`, blobs and split chunks also outlive it.
    """

    def __init__(self, store: BlobStore, cache: BlobCache | None = None) -> None:
        self.store = store
        self.cache = cache
        self.blobs: dict[str, bytes] = {}
        self.chunks: dict[str, list[bytes]] = {}  # manifest chunks, split once

    async def fetch(self, literals: Iterable[bytes]) -> None:
        """Read every blob reachable from ``literals`` that is not read yet."""
        pending = set().union(*(references(literal) for literal in literals)) - self.blobs.keys()
        while pending:
            missing = [address for address in pending if not self._from_cache(address)]
            fetched = await asyncio.gather(*(self.store.get(address) for address in missing))
            for address, data in zip(missing, fetched, strict=True):
                self.blobs[address] = data
                if self.cache is not None:
                    self.cache.keep(address, data)
            found: set[str] = set().union(*(references(self.blobs[address]) for address in pending))
            pending = found - self.blobs.keys()

    def _from_cache(self, address: str) -> bool:
        data = None if self.cache is None else self.cache.blob(address)
        if data is None:
            return False
        self.blobs[address] = data
        chunk = self.cache.chunk(address)  # type: ignore[union-attr]
        if chunk is not None:
            self.chunks[address] = chunk
        return True

    def substitute(self, literal: bytes) -> bytes:
        """``literal`` with its references replaced; every blob it reaches must be fetched."""
        if not may_hold_references(literal):
            return literal
        known = len(self.chunks)
        result = substitute(literal, self.blobs, self.chunks)
        if self.cache is not None and len(self.chunks) != known:
            for address, items in self.chunks.items():
                self.cache.keep(address, self.blobs[address], items)
        return result

    async def resolve(self, literal: bytes) -> bytes:
        """``literal`` with its references replaced (itself when it has none)."""
        if not may_hold_references(literal):
            return literal
        await self.fetch([literal])
        return self.substitute(literal)
