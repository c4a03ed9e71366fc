"""The type system of interfaces: readable names, assignability of producer to consumer types, and which
types the literal codec supports natively (the rest fall back to cloudpickled leaves).

This module sits below the codec (``engine._literals``) and imports nothing of the SDK: where
assignability needs the codec (the values of a ``Literal[...]``), the codec passes its judgement in.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = [
    "assignable",
    "dict_key_type",
    "dict_value_type",
    "fixed_tuple_arity",
    "is_namedtuple",
    "is_optional",
    "is_supported",
    "item_type",
    "normalize_type",
    "sequence_kind",
    "strip_optional",
    "type_mentions",
    "type_repr",
    "unsupported_leaves",
]

_NONE_TYPE = type(None)
_SCALARS: frozenset[Any] = frozenset(
    {
        int,
        float,
        str,
        bool,
        bytes,
        bytearray,
        _NONE_TYPE,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
        uuid.UUID,
    }
)
_SEQUENCES: frozenset[Any] = frozenset({list, set, frozenset, tuple})


def normalize_type(tp: Any) -> Any:
    """Turn a ``None`` annotation into ``NoneType``; other annotations are returned unchanged.

    Args:
        tp: a type annotation.

    Returns:
        The annotation, with ``None`` replaced by ``type(None)``.
    """
    return _NONE_TYPE if tp is None else tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def is_optional(tp: Any) -> bool:
    """Whether ``None`` is a value of ``tp``.

    Args:
        tp: a type annotation.

    Returns:
        ``True`` for ``None``, ``Optional[X]``, ``X | None`` and ``Any``.
    """
    tp = normalize_type(tp)
    if tp is Any or tp is _NONE_TYPE:
        return True
    return _is_union(tp) and any(is_optional(a) for a in typing.get_args(tp))


def is_namedtuple(tp: Any) -> bool:
    """Whether ``tp`` is a ``typing.NamedTuple`` (or ``collections.namedtuple``) class.

    Args:
        tp: a type annotation.

    Returns:
        ``True`` for a tuple subclass with ``_fields``.
    """
    return isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields")


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and typing.is_typeddict(tp)


def is_supported(tp: Any) -> bool:
    """Whether values of ``tp`` are encoded natively (not as cloudpickled leaves).

    Args:
        tp: a type annotation.

    Returns:
        ``False`` if ``tp`` or any type nested in it falls back to cloudpickle.
    """
    return not _unsupported_leaves(tp, set())


def _unsupported_leaves(tp: Any, seen: set[int]) -> list[Any]:
    tp = normalize_type(tp)
    if id(tp) in seen:  # recursive dataclasses / structs
        return []
    seen.add(id(tp))
    if tp is Any or tp in _SCALARS:
        return []
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unsupported_leaves(typing.get_args(tp)[0], seen)
    if origin is typing.Literal:
        return []
    if _is_union(tp):
        return [leaf for a in typing.get_args(tp) for leaf in _unsupported_leaves(a, seen)]
    if origin in _SEQUENCES or origin is dict or tp in _SEQUENCES or tp is dict:
        return [leaf for a in typing.get_args(tp) if a is not Ellipsis for leaf in _unsupported_leaves(a, seen)]
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return []
        if issubclass(tp, msgspec.Struct) or dataclasses.is_dataclass(tp) or is_namedtuple(tp) or _is_typeddict(tp):
            try:
                hints = typing.get_type_hints(tp)
            except Exception:
                return [tp]
            if dataclasses.is_dataclass(tp):
                names = {f.name for f in dataclasses.fields(tp)}
                hints = {k: v for k, v in hints.items() if k in names}
            return [leaf for h in hints.values() for leaf in _unsupported_leaves(h, seen)]
    return [tp]


def unsupported_leaves(tp: Any) -> list[Any]:
    """The types nested in ``tp`` whose values will be cloudpickled.

    Args:
        tp: a type annotation.

    Returns:
        The fallback types, outermost first (empty when ``tp`` is fully supported).
    """
    return _unsupported_leaves(tp, set())


def type_repr(tp: Any) -> str:
    """A readable form of a type annotation, e.g. ``list[int]`` or ``Result | None``.

    Args:
        tp: a type annotation.

    Returns:
        The readable text (class names without their module).
    """
    tp = normalize_type(tp)
    if tp is _NONE_TYPE:
        return "None"
    if tp is Any:
        return "Any"
    if tp is Ellipsis:
        return "..."
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_union(tp):
        return " | ".join(type_repr(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is typing.Annotated:
        return type_repr(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin)
        if not args:
            return name
        return f"{name}[{', '.join(type_repr(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__qualname__.replace("<locals>.", "")
    return str(tp)


def _union_args(tp: Any) -> tuple[Any, ...]:
    return tuple(normalize_type(a) for a in typing.get_args(tp)) if _is_union(tp) else (tp,)


def assignable(source_tp: Any, target_tp: Any, value_fits: Callable[[Any, Any], bool]) -> bool:
    """Whether a producer's output of type ``source_tp`` fits a consumer's input of type ``target_tp``.

    Exact matches fit; ``X`` fits ``X | None``; ``int`` fits ``float``; containers fit when their item
    types do; subclasses fit their bases; ``Any`` and cloudpickle-fallback types are accepted leniently.
    A ``Literal[...]`` source fits when each of its values does, as judged by ``value_fits``: that is
    the codec's call, so the codec passes it in (``engine._literals.is_assignable`` binds it).

    Args:
        source_tp: the producer's type.
        target_tp: the consumer's type.
        value_fits: ``value_fits(value, tp)``: whether ``value`` is a valid ``tp``.

    Returns:
        ``True`` if every value of ``source_tp`` is a valid ``target_tp``.
    """
    src = normalize_type(source_tp)
    dst = normalize_type(target_tp)
    if src is Any or dst is Any or src == dst:
        return True
    if typing.get_origin(src) is typing.Annotated:
        return assignable(typing.get_args(src)[0], dst, value_fits)
    if typing.get_origin(dst) is typing.Annotated:
        return assignable(src, typing.get_args(dst)[0], value_fits)
    if _is_union(src):
        return all(assignable(s, dst, value_fits) for s in _union_args(src))
    if _is_union(dst):
        return any(assignable(src, d, value_fits) for d in _union_args(dst))
    if typing.get_origin(src) is typing.Literal:
        return all(value_fits(v, dst) for v in typing.get_args(src))
    if typing.get_origin(dst) is typing.Literal:
        return False
    if src is int and dst is float:
        return True
    s_origin = typing.get_origin(src) or src
    d_origin = typing.get_origin(dst) or dst
    if s_origin in _SEQUENCES or s_origin is dict or d_origin in _SEQUENCES or d_origin is dict:
        return _containers_assignable(src, dst, s_origin, d_origin, value_fits)
    if isinstance(src, type) and isinstance(dst, type):
        if not is_supported(src) or not is_supported(dst):
            return True  # cloudpickled values are checked when the task runs, not here
        if src is bool or dst is bool:
            return False
        return issubclass(src, dst)
    # other annotations (Callable[...], TypeVars, ...) are cloudpickled: checked when the task runs
    return not is_supported(src) and not is_supported(dst)


def _containers_assignable(
    src: Any, dst: Any, s_origin: Any, d_origin: Any, value_fits: Callable[[Any, Any], bool]
) -> bool:
    containers = (*_SEQUENCES, dict)
    if s_origin not in containers or d_origin not in containers:
        return False
    s_args = typing.get_args(src)
    d_args = typing.get_args(dst)
    if s_origin is dict or d_origin is dict:
        if s_origin is not d_origin:
            return False
        if not s_args or not d_args:
            return True
        return assignable(s_args[0], d_args[0], value_fits) and assignable(s_args[1], d_args[1], value_fits)
    # list, set, frozenset and tuple all travel as msgpack arrays; allow list <-> tuple, not set
    if (s_origin in (set, frozenset)) != (d_origin in (set, frozenset)):
        return False
    if not s_args or not d_args:
        return True
    s_items = _item_types(s_origin, s_args)
    d_items = _item_types(d_origin, d_args)
    if isinstance(s_items, tuple) and isinstance(d_items, tuple):
        return len(s_items) == len(d_items) and all(
            assignable(s, d, value_fits) for s, d in zip(s_items, d_items, strict=True)
        )
    if isinstance(d_items, tuple):  # a variable-length list into a fixed-size tuple: length unknown
        return False
    if isinstance(s_items, tuple):
        return all(assignable(s, d_items, value_fits) for s in s_items)
    return assignable(s_items, d_items, value_fits)


def _item_types(origin: Any, args: tuple[Any, ...]) -> Any:
    """One item type for homogeneous sequences, a tuple of them for fixed-size tuples."""
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        if args == ((),):
            return ()
        return tuple(args)
    return args[0]


def item_type(tp: Any, index: int | None = None) -> Any:
    """The type of an item of a list, set or tuple type (``Any`` when unknown).

    Args:
        tp: a sequence type.
        index: for fixed-size tuples, the position.

    Returns:
        The item type.
    """
    tp = strip_optional(tp)
    origin = typing.get_origin(tp) or tp
    args = typing.get_args(tp)
    if not args:
        return Any
    items = _item_types(origin, args)
    if isinstance(items, tuple):
        return items[index] if index is not None and index < len(items) else Any
    return items


def sequence_kind(tp: Any) -> str | None:
    """Which container a type is: ``"list"`` (list, tuple, set), ``"dict"``, or ``None``.

    Args:
        tp: a type annotation (``Optional`` is looked through).

    Returns:
        The container kind, or ``None`` for non-containers.
    """
    tp = normalize_type(tp)
    if _is_union(tp):
        kinds = {sequence_kind(a) for a in _union_args(tp) if a is not _NONE_TYPE}
        return kinds.pop() if len(kinds) == 1 else None
    origin = typing.get_origin(tp) or tp
    if origin in _SEQUENCES:
        return "list"
    if origin is dict:
        return "dict"
    if tp is Any:
        return "any"
    return None


def strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged.

    Args:
        tp: a type annotation.

    Returns:
        The type without its ``None`` member.
    """
    tp = normalize_type(tp)
    if not _is_union(tp):
        return tp
    rest = [a for a in _union_args(tp) if a is not _NONE_TYPE]
    if len(rest) == 1:
        return rest[0]
    return functools.reduce(lambda a, b: a | b, rest) if rest else _NONE_TYPE


def dict_key_type(tp: Any) -> Any:
    """The key type of a ``dict[K, V]`` type (``Any`` when unknown).

    Args:
        tp: a dict type.

    Returns:
        ``K``.
    """
    args = typing.get_args(strip_optional(tp))
    return args[0] if len(args) == 2 else Any


def fixed_tuple_arity(tp: Any) -> int | None:
    """The length of a fixed-size tuple type (``tuple[int, str]`` -> 2); ``None`` for anything else.

    Args:
        tp: a type annotation (``Optional`` is looked through).

    Returns:
        The number of items, or ``None``.
    """
    tp = strip_optional(tp)
    args = typing.get_args(tp)
    if (typing.get_origin(tp) or tp) is not tuple or not args or args[-1] is Ellipsis:
        return None
    return len(args)


def dict_value_type(tp: Any) -> Any:
    """The value type of a ``dict[K, V]`` type (``Any`` when unknown).

    Args:
        tp: a dict type.

    Returns:
        ``V``.
    """
    args = typing.get_args(strip_optional(tp))
    return args[1] if len(args) == 2 else Any


def type_mentions(tp: Any, targets: tuple[type, ...]) -> bool:
    """Whether values of ``tp`` may contain an instance of one of ``targets``: through containers,
    unions, and dataclass and Struct fields (recursive types included); unknown shapes answer False.

    Cached per annotation; the runtime and the codec ask for every task interface they handle.
    """
    try:
        return _mentions_cached(tp, targets)
    except TypeError:  # an unhashable annotation
        return _mentions(tp, targets, frozenset())


@functools.lru_cache(maxsize=2048)
def _mentions_cached(tp: Any, targets: tuple[type, ...]) -> bool:
    return _mentions(tp, targets, frozenset())


def _mentions(tp: Any, targets: tuple[type, ...], seen: frozenset[int]) -> bool:
    if tp in targets:
        return True
    if id(tp) in seen:
        return False
    seen = seen | {id(tp)}
    args = typing.get_args(tp)
    if args:
        return any(_mentions(arg, targets, seen) for arg in args if arg is not Ellipsis)
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, msgspec.Struct)):
        try:
            hints = typing.get_type_hints(tp)
        except Exception:
            return False
        return any(_mentions(hint, targets, seen) for hint in hints.values())
    return False
