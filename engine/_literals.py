"""The literal codec: Python values <-> canonical msgpack bytes, driven by type hints.

A literal is what the planner moves between nodes without decoding it. Two rules make that work:

* **Canonical.** The same value of the same type always encodes to the same bytes, in any process:
  dicts and sets are written in sorted order (msgspec ``order="deterministic"``), and values are
  normalised through their declared type first (``1`` declared ``float`` is written as ``1.0``).
* **Structural.** ``to_literal([a, b], list[T])`` is a msgpack array whose items are exactly
  ``to_literal(a, T)`` and ``to_literal(b, T)``, and ``None`` is msgpack nil (``b"\\xc0"``). The planner
  splits map outputs and assembles ``ListBinding``s by byte surgery (``engine.literals``).
  Hence values of unsupported types are cloudpickled *per leaf*, as a msgpack
  extension, never a whole container at once.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import typing
import uuid
from typing import Any

import msgspec

from engine._types import (
    assignable,
    is_optional,
    is_supported,
    normalize_type,
    type_mentions,
    type_repr,
)
from engine.errors import CompileError, TypeMismatch

__all__ = [
    "HASHED_PICKLE_EXT_CODE",
    "PICKLE_EXT_CODE",
    "Placeholder",
    "check_type",
    "from_literal",
    "is_assignable",
    "is_optional",
    "is_supported",
    "normalize_type",
    "to_literal",
    "type_repr",
]

# msgpack extension type code of a cloudpickled leaf value
PICKLE_EXT_CODE = 1
# a cloudpickled leaf with a stable digest beside it: ``[sha256 of a by-name pickle, cloudpickle]``.
# cloudpickle writes classes and functions of ``__main__`` by value, with a random tracker id and in
# an order that follows the hash seed, so equal values pickle to different bytes in each process;
# cache keys hash the digest instead (`engine.literals.literal_hash`).
HASHED_PICKLE_EXT_CODE = 5


class Placeholder:
    """Base of values that stand for a value not known yet (``engine.Promise``): never a literal.

    The codec refuses to encode one, with a ``CompileError`` that says how to pass it instead. The
    marker lives here, below the compiler, so that the codec (which workers import) knows no Promise.
    """

    __slots__ = ()


class _PromiseInLiteral(TypeError):
    """Raised by the encoder hook when a Promise hides inside a constant."""


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Placeholder):
        raise _PromiseInLiteral(repr(obj))
    import cloudpickle

    try:
        pickled = cloudpickle.dumps(obj)
    except Exception as exc:  # pickling can fail in arbitrary ways
        raise TypeError(f"{type(obj).__qualname__} value cannot be pickled: {exc}") from exc
    digest = _stable_digest(obj)
    if digest is None:
        return msgspec.msgpack.Ext(PICKLE_EXT_CODE, pickled)
    return msgspec.msgpack.Ext(HASHED_PICKLE_EXT_CODE, _PLAIN_RAW.encode([digest, pickled]))


def _stable_digest(obj: Any) -> bytes | None:
    """sha256 of ``obj`` pickled with classes and functions by name (stable across processes for
    equal state), or None when it cannot be pickled that way (a lambda, a local class)."""
    import hashlib
    import pickle

    try:
        return hashlib.sha256(pickle.dumps(obj, protocol=4)).digest()
    except Exception:
        return None


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == HASHED_PICKLE_EXT_CODE:
        data = msgspec.msgpack.decode(data)[1]
    elif code != PICKLE_EXT_CODE:
        raise TypeError(f"unknown msgpack extension type {code} in a literal")
    import cloudpickle

    return cloudpickle.loads(data)


def _dec_hook(tp: Any, obj: Any) -> Any:
    # Only reached for types msgspec does not know: their values arrive unpickled by _ext_hook.
    origin = typing.get_origin(tp) or tp
    if isinstance(origin, type) and isinstance(obj, origin):
        return obj
    raise TypeError(f"Expected `{type_repr(tp)}`, got `{type(obj).__qualname__}`")


_PLAIN_RAW = msgspec.msgpack.Encoder()
_ENCODER = msgspec.msgpack.Encoder(order="deterministic", enc_hook=_enc_hook)
_PLAIN_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_BUILTIN_TYPES = (
    bytes,
    bytearray,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    msgspec.msgpack.Ext,
)


def _encode(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value)
    except TypeError as exc:
        if "str keys" not in str(exc):
            raise
    # msgspec sorts only str-keyed dicts when encoding; to_builtins sorts every dict and set, and the
    # plain encoder then keeps that order, giving the same bytes as the fast path for everything else.
    builtins = msgspec.to_builtins(
        value, order="deterministic", str_keys=False, builtin_types=_BUILTIN_TYPES, enc_hook=_enc_hook
    )
    return _PLAIN_ENCODER.encode(builtins)


def _decoder_for(tp: Any) -> msgspec.msgpack.Decoder[Any]:
    try:
        return _cached_decoder(tp)
    except TypeError:  # an unhashable type annotation
        return msgspec.msgpack.Decoder(tp, ext_hook=_ext_hook, dec_hook=_dec_hook)


@functools.lru_cache(maxsize=1024)
def _cached_decoder(tp: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(tp, ext_hook=_ext_hook, dec_hook=_dec_hook)


def check_type(tp: Any, what: str) -> None:
    """Check at definition time that values of ``tp`` can be decoded.

    Args:
        tp: a type annotation.
        what: where it is used, for the message.

    Raises:
        CompileError: msgspec cannot decode ``tp`` (e.g. a union of two list-like types).
    """
    try:
        _decoder_for(normalize_type(tp))
    except TypeError as exc:
        raise CompileError(f"{what}: type {type_repr(tp)} is not supported ({exc}); use a dataclass instead") from None


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, Placeholder):
        return repr(value)
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_literal(value: Any, tp: Any) -> bytes:
    """Encode a value of type ``tp`` as a canonical literal.

    Args:
        value: the Python value.
        tp: its declared type (an annotation such as ``list[int]`` or ``Result | None``).

    Returns:
        Canonical msgpack bytes.

    Raises:
        TypeMismatch: the value does not fit ``tp``.
        CompileError: the value contains a ``Promise`` (only whole Promises, lists and dicts of them
            can be bound to an input).
    """
    tp = normalize_type(tp)
    try:
        raw = _encode(value)
    except _PromiseInLiteral as exc:
        raise CompileError(
            f"a Promise ({exc}) is nested inside a constant of type {type(value).__qualname__}: a Promise "
            "can only be passed directly, or as an item of a list or dict; build the composite value "
            "inside a task or use @dynamic"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeMismatch(
            f"expected {type_repr(tp)}, got {type(value).__qualname__} {_short(value)}: cannot encode it: {exc}"
        ) from None
    try:
        normalized = _decoder_for(tp).decode(raw)
    except msgspec.ValidationError as exc:
        raise TypeMismatch(
            f"expected {type_repr(tp)}, got {type(value).__qualname__} {_short(value)} ({exc})"
        ) from None
    if _holds_decimal(tp):
        normalized = _canonical_decimals(
            msgspec.to_builtins(
                normalized, order="deterministic", str_keys=False, builtin_types=_BUILTIN_TYPES, enc_hook=_enc_hook
            )
        )
    return _encode(normalized)


def _canonical_decimal(value: decimal.Decimal) -> decimal.Decimal:
    """The one spelling of a decimal's value: ``1.50`` and ``1.5`` are equal, so they must be one
    literal (and one cache key); trailing fractional zeros go, integers keep their digits."""
    if not value.is_finite():
        return value
    if value.is_zero():
        return decimal.Decimal(0)
    reduced = value.normalize()
    return reduced.quantize(decimal.Decimal(1)) if reduced.as_tuple().exponent > 0 else reduced  # type: ignore[operator]


def _canonical_decimals(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return _canonical_decimal(value)
    if isinstance(value, list | tuple):
        return [_canonical_decimals(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical_decimals(item) for key, item in value.items()}
    return value


def _holds_decimal(tp: Any) -> bool:
    """Whether values of ``tp`` may contain a ``Decimal``; only typed decimals are normalised."""
    return type_mentions(tp, (decimal.Decimal,))


def from_literal(data: bytes, tp: Any) -> Any:
    """Decode a literal into a Python value of type ``tp``.

    Args:
        data: bytes made by ``to_literal`` (or assembled by the planner from such bytes).
        tp: the declared type.

    Returns:
        The Python value.

    Raises:
        TypeMismatch: the bytes do not hold a value of type ``tp``.
    """
    tp = normalize_type(tp)
    try:
        return _decoder_for(tp).decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TypeMismatch(f"literal does not hold a {type_repr(tp)}: {exc}") from None


def is_assignable(source_tp: Any, target_tp: Any) -> bool:
    """Whether a producer's output of type ``source_tp`` fits a consumer's input of type ``target_tp``.

    The type system decides (``engine._types.assignable``: exact matches, ``X`` into ``X | None``,
    ``int`` into ``float``, containers by item type, subclasses into bases, cloudpickled types
    leniently); the values of a ``Literal[...]`` source fit when this codec encodes them as a
    ``target_tp``.

    Args:
        source_tp: the producer's type.
        target_tp: the consumer's type.

    Returns:
        ``True`` if every value of ``source_tp`` is a valid ``target_tp``.
    """
    return assignable(source_tp, target_tp, _value_fits)


def _value_fits(value: Any, tp: Any) -> bool:
    try:
        to_literal(value, tp)
    except CompileError:
        return False
    return True
