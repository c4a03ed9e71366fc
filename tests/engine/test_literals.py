"""The literal codec: round trips, canonical bytes, the list-structure property, the type system."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import CompileError, Dir, File, TypeMismatch
from engine._literals import (
    check_type,
    from_literal,
    is_assignable,
    is_supported,
    to_literal,
    type_repr,
)
from engine.literals import join_list_literal, split_list_literal


@dataclasses.dataclass
class Point:
    x: int
    label: str
    tags: list[str]


class Score(msgspec.Struct, frozen=True):
    name: str
    value: float
    extra: dict[str, int] = {}


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Pair(NamedTuple):
    a: int
    b: str


class Opaque:
    """A type the codec does not know: values are cloudpickled per leaf."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.v == self.v

    def __hash__(self) -> int:
        return hash(self.v)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
texts = st.text(max_size=8)
floats = st.floats(allow_nan=False, allow_infinity=False)
aware = st.datetimes(timezones=st.just(datetime.UTC))

# (type, strategy of values of that type) for every supported kind of type
CASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (int, st.integers(min_value=-(2**63), max_value=2**64 - 1)),
    (float, floats),
    (str, st.text()),
    (bool, st.booleans()),
    (bytes, st.binary(max_size=16)),
    (type(None), st.none()),
    (list[int], st.lists(st.integers(-1000, 1000), max_size=5)),
    (dict[str, int], st.dictionaries(texts, st.integers(-5, 5), max_size=5)),
    (dict[int, str], st.dictionaries(st.integers(-5, 5), texts, max_size=5)),
    (tuple[int, str], st.tuples(st.integers(-5, 5), texts)),
    (tuple[float, ...], st.lists(floats, max_size=4).map(tuple)),
    (set[str], st.sets(texts, max_size=5)),
    (frozenset[int], st.frozensets(st.integers(-9, 9), max_size=5)),
    (Optional[int], st.none() | st.integers(-9, 9)),  # noqa: UP045 - the typing spelling is tested on purpose
    (str | None, st.none() | texts),
    (list[dict[str, list[int | None]]], st.lists(st.dictionaries(texts, st.lists(st.none() | st.integers(0, 9))))),
    (Point, st.builds(Point, x=st.integers(-9, 9), label=texts, tags=st.lists(texts, max_size=3))),
    (Score, st.builds(Score, name=texts, value=floats, extra=st.dictionaries(texts, st.integers(0, 3), max_size=2))),
    (Color, st.sampled_from(Color)),
    (Level, st.sampled_from(Level)),
    (Pair, st.builds(Pair, a=st.integers(-9, 9), b=texts)),
    (datetime.datetime, aware),
    (datetime.datetime, st.datetimes()),
    (datetime.date, st.dates()),
    (datetime.timedelta, st.timedeltas()),
    (File, st.builds(File, texts)),
    (Dir, st.builds(Dir, texts)),
    (list[Point], st.lists(st.builds(Point, x=st.integers(0, 3), label=texts, tags=st.just([])), max_size=3)),
    (Opaque, st.builds(Opaque, st.integers(-9, 9))),
    (list[Opaque], st.lists(st.builds(Opaque, st.integers(-9, 9)), max_size=3)),
    (Any, st.none() | st.integers(-(2**63), 2**63) | texts | st.lists(st.integers(0, 3))),
]
IDS = [f"{i}-{type_repr(tp)}" for i, (tp, _) in enumerate(CASES)]


@pytest.mark.parametrize(("tp", "strategy"), CASES, ids=IDS)
def test_round_trip_and_canonical(tp: Any, strategy: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=40, deadline=None)
    @given(strategy)
    def check(value: Any) -> None:
        data = to_literal(value, tp)
        assert from_literal(data, tp) == value
        # canonical: the decoded value encodes to the very same bytes
        assert to_literal(from_literal(data, tp), tp) == data

    check()


@pytest.mark.parametrize(("tp", "strategy"), CASES, ids=IDS)
def test_list_literal_structure(tp: Any, strategy: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=25, deadline=None)
    @given(st.lists(strategy, max_size=4))
    def check(values: list[Any]) -> None:
        whole = to_literal(values, list[tp])
        items = [to_literal(v, tp) for v in values]
        assert split_list_literal(whole) == items
        assert join_list_literal(items) == whole

    check()


@given(st.dictionaries(texts, st.integers(-(2**63), 2**63), max_size=8))
def test_dict_order_does_not_change_bytes(d: dict[str, int]) -> None:
    reversed_d = dict(reversed(list(d.items())))
    assert to_literal(d, dict[str, int]) == to_literal(reversed_d, dict[str, int])


@given(st.lists(texts, max_size=8, unique=True))
def test_set_order_does_not_change_bytes(items: list[str]) -> None:
    forward: set[str] = set()
    backward: set[str] = set()
    for s in items:
        forward.add(s)
    for s in reversed(items):
        backward.add(s)
    assert to_literal(forward, set[str]) == to_literal(backward, set[str])


def test_none_is_msgpack_nil() -> None:
    assert to_literal(None, None) == b"\xc0"
    assert to_literal(None, int | None) == b"\xc0"
    assert to_literal([1, None], list[int | None]) == b"\x92\x01\xc0"


def test_int_is_normalised_to_float() -> None:
    assert to_literal(1, float) == to_literal(1.0, float)
    assert to_literal([1, 2], list[float]) == join_list_literal([to_literal(1.0, float), to_literal(2.0, float)])


def test_same_bytes_across_processes() -> None:
    code = textwrap.dedent(
        """
        import sys
        from engine._literals import to_literal
        value = {"b": {"q", "r", "s"}, "a": {"z", "y", "x", "w"}, "c": set()}
        sys.stdout.write(to_literal(value, dict[str, set[str]]).hex())
        sys.stdout.write(to_literal({3: "c", 1: "a", 2: "b"}, dict[int, str]).hex())
        """
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1


@pytest.mark.parametrize(
    ("value", "tp", "expected", "given_"),
    [
        ("a", int, "int", "str"),
        (1.5, int, "int", "float"),
        (True, int, "int", "bool"),
        ([1, "x"], list[int], "list[int]", "list"),
        ({"a": "b"}, dict[str, int], "dict[str, int]", "dict"),
        (None, int, "int", "NoneType"),
        (Point(1, "a", []), Score, "Score", "Point"),
        ("purple", Color, "Color", "str"),
        (3, File, "File", "int"),
        ((1, 2, 3), tuple[int, str], "tuple[int, str]", "tuple"),
    ],
)
def test_mismatch_names_expected_and_given(value: Any, tp: Any, expected: str, given_: str) -> None:
    with pytest.raises(TypeMismatch) as info:
        to_literal(value, tp)
    assert expected in str(info.value)
    assert given_ in str(info.value)


def test_from_literal_mismatch() -> None:
    with pytest.raises(TypeMismatch, match="list\\[int\\]"):
        from_literal(to_literal("x", str), list[int])
    with pytest.raises(TypeMismatch, match="not a list"):
        split_list_literal(to_literal(3, int))


def test_fallback_is_per_leaf() -> None:
    data = to_literal([Opaque(1), Opaque(2)], list[Opaque])
    assert data[0] == 0x92  # a real msgpack array, not one pickled blob
    assert split_list_literal(data) == [to_literal(Opaque(1), Opaque), to_literal(Opaque(2), Opaque)]
    assert not is_supported(Opaque)
    assert not is_supported(dict[str, list[Opaque]])
    assert is_supported(dict[str, list[Point]])


@pytest.mark.parametrize(
    ("tp", "text"),
    [
        (int, "int"),
        (None, "None"),
        (list[int], "list[int]"),
        (dict[str, list[float]], "dict[str, list[float]]"),
        (Optional[int], "int | None"),  # noqa: UP045
        (int | None, "int | None"),
        (tuple[int, ...], "tuple[int, ...]"),
        (Point, "Point"),
        (list[File], "list[File]"),
        (Any, "Any"),
    ],
)
def test_type_repr(tp: Any, text: str) -> None:
    assert type_repr(tp) == text


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        (int, int, True),
        (int, float, True),
        (float, int, False),
        (int, int | None, True),
        (int | None, int, False),
        (None, int | None, True),
        (bool, int, False),
        (str, int, False),
        (list[int], list[float], True),
        (list[int], list[str], False),
        (list[int], list[int | None], True),
        (list[int | None], list[int], False),
        (dict[str, list[int]], dict[str, list[float]], True),
        (dict[str, int], dict[int, int], False),
        (tuple[int, str], tuple[int, str], True),
        (tuple[int, str], tuple[int, int], False),
        (tuple[int, ...], list[int], True),
        (list[int], set[int], False),
        (Point, Point, True),
        (Point, Score, False),
        (Any, int, True),
        (int, Any, True),
        (Opaque, Opaque, True),
        (Opaque, list[Opaque], False),
        (list[Opaque], list[Opaque], True),
        (File, File, True),
        (File, Dir, False),
        (list, list[int], True),
        (Callable[[int], int], Callable[[str], int], True),
        (Callable[[int], int], int, False),
    ],
)
def test_is_assignable(source: Any, target: Any, ok: bool) -> None:
    assert is_assignable(source, target) is ok


def test_check_type_rejects_types_msgspec_cannot_decode() -> None:
    check_type(dict[str, list[int]], "task 't', input 'x'")
    with pytest.raises(CompileError, match=r"task 't', input 'x'.*set\[int\] \| list\[str\]"):
        check_type(set[int] | list[str], "task 't', input 'x'")


# --- blob references ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=300)), max_size=400),
    st.integers(64, 4096),
)
def test_offloaded_literals_substitute_back_to_themselves(items: list, limit: int) -> None:
    from engine.literals import offload, references, substitute

    literal = msgspec.msgpack.encode(items)
    inline, blobs = offload(literal, limit)
    assert len(inline) <= max(limit, 64 + 40 * len(blobs))  # a reference or a manifest, small
    assert references(inline) <= set(blobs)
    assert msgspec.msgpack.decode(substitute(inline, blobs)) == items


def test_a_manifest_splits_into_item_references_without_reading_a_chunk() -> None:
    from engine.literals import MANIFEST_CHUNK_ITEMS, offload, substitute

    items = list(range(MANIFEST_CHUNK_ITEMS * 2 + 5))
    inline, blobs = offload(msgspec.msgpack.encode(items), 1024)
    parts = split_list_literal(inline)  # no blob read: `blobs` is not even given
    assert len(parts) == len(items)
    assert [msgspec.msgpack.decode(substitute(parts[i], blobs)) for i in (0, 4096, len(items) - 1)] == [
        0,
        4096,
        len(items) - 1,
    ]
    assert msgspec.msgpack.decode(substitute(join_list_literal(parts[:3]), blobs)) == [0, 1, 2]


def test_a_literal_under_the_limit_is_kept_as_it_is() -> None:
    from engine.literals import offload

    literal = msgspec.msgpack.encode("small")
    assert offload(literal, 100) == (literal, {})


class CountingBlobs:
    """A blob store in a dict that counts reads."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.reads = 0

    async def get(self, address: str) -> bytes:
        self.reads += 1
        return self.blobs[address]


async def test_a_blob_cache_reads_and_splits_each_manifest_chunk_once_across_resolvers() -> None:
    from engine.literals import BlobCache, BlobResolver, offload

    items = list(range(5000))
    inline, blobs = offload(msgspec.msgpack.encode(items), 1024)
    parts = split_list_literal(inline)
    store = CountingBlobs(blobs)
    cache = BlobCache()
    resolved = []
    for start in range(0, len(parts), 50):  # one resolver per chunk request, as executors do
        resolver = BlobResolver(store, cache)  # type: ignore[arg-type]
        await resolver.fetch(parts[start : start + 50])
        resolved += [msgspec.msgpack.decode(resolver.substitute(part)) for part in parts[start : start + 50]]
    assert resolved == items
    assert store.reads == len(blobs)


def test_a_blob_cache_stays_under_its_bound() -> None:
    from engine.literals import BlobCache

    cache = BlobCache(max_bytes=4000)
    for n in range(20):
        cache.keep(f"blob://sha256/{n}", bytes(900), [bytes(900)])
    assert cache.blob("blob://sha256/19") is not None
    assert cache.blob("blob://sha256/0") is None
    assert cache._size <= 4000
    cache.keep("blob://sha256/huge", bytes(3000))  # above a quarter of the bound: not kept
    assert cache.blob("blob://sha256/huge") is None
