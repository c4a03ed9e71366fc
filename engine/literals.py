"""Byte-level literal operations: what the control loop does with values without decoding them.

A literal is canonical msgpack (see the SDK's codec, ``engine._literals``). The planner splits map
inputs and assembles list and dict bindings by byte surgery, never by decoding and re-encoding
values, so that it needs neither the user's types nor their code. This module is part of the floor:
it imports nothing of ours outside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.errors import TypeMismatch

__all__ = ["NIL_LITERAL", "join_dict_literal", "join_list_literal", "split_list_literal"]

NIL_LITERAL = b"\xc0"  # msgpack nil: the literal of None

# Items are already canonical literals wrapped in Raw; only the container needs deterministic order.
_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


def split_list_literal(data: bytes) -> list[bytes]:
    """Split the literal of a list into the literals of its items, without decoding them.

    Args:
        data: the literal of a ``list[T]`` (or tuple).

    Returns:
        One literal per item, in order.

    Raises:
        TypeMismatch: ``data`` is not a msgpack array.
    """
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
