"""What every blob store backend shares: the chunks of a streamed put, gathered into writes."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable

__all__ = ["WRITE_SIZE", "coalesce"]

# Chunks of a streamed put are gathered into writes of about this size: one thread hop (and one
# network request, for remote stores) per few MiB rather than per tiny chunk.
WRITE_SIZE = 4 << 20


async def coalesce(chunks: AsyncIterable[bytes] | Iterable[bytes], size: int = WRITE_SIZE) -> AsyncIterator[bytes]:
    """The bytes of ``chunks`` regrouped into pieces of at least ``size`` bytes (the last may be shorter).

    A chunk already that big is passed on without a copy. A sync iterable is iterated on the
    caller's thread (the event loop): give an async iterable when producing a chunk blocks.

    Args:
        chunks: bytes-like objects (``bytes``, ``bytearray``, ``memoryview``), sync or async.
        size: the smallest piece worth a write.

    Raises:
        TypeError: a chunk is not bytes-like (or ``chunks`` is not iterable).
    """
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in _each(chunks):
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"put_stream chunks must be bytes-like, got {type(chunk).__name__}")
        piece = bytes(chunk) if not isinstance(chunk, bytes) else chunk
        if not piece:
            continue
        if not pending and len(piece) >= size:
            yield piece
            continue
        pending.append(piece)
        pending_size += len(piece)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)


async def _each(chunks: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    elif isinstance(chunks, Iterable) and not isinstance(chunks, bytes | bytearray | memoryview | str):
        for chunk in chunks:
            yield chunk
    else:
        raise TypeError(
            f"put_stream takes an iterable or async iterable of bytes chunks, got {type(chunks).__name__}; "
            "use put() for a single bytes value"
        )
