"""Cache keys: equal values give equal keys in any process; every part of a task's identity counts."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import task
from engine._literals import from_literal, to_literal
from engine.errors import CompileError
from engine.interfaces import CacheKey
from engine.literals import inputs_hash, literal_hash, offload

ROOT = Path(__file__).resolve().parents[2]
D = decimal.Decimal


@dataclasses.dataclass
class Price:
    amount: D
    history: list[D]


def h(value: object, tp: object) -> str:
    return literal_hash(to_literal(value, tp))


def test_negative_zero_hashes_as_zero_and_keeps_its_value() -> None:
    assert h(-0.0, float) == h(0.0, float)
    assert h([1.5, -0.0], list[float]) == h([1.5, 0.0], list[float])
    assert h({"a": -0.0}, dict[str, float]) == h({"a": 0.0}, dict[str, float])
    assert str(from_literal(to_literal(-0.0, float), float)) == "-0.0"  # the task still gets -0.0
    assert h(1.0, float) != h(-1.0, float)


def test_decimals_of_equal_value_are_one_literal() -> None:
    assert to_literal(D("1.50"), D) == to_literal(D("1.5"), D)
    assert to_literal(D("1E+2"), D) == to_literal(D("100"), D)
    assert from_literal(to_literal(D("100.00"), D), D) == D("100")
    assert to_literal(Price(D("2.10"), [D("1.0")]), Price) == to_literal(Price(D("2.1"), [D("1")]), Price)
    assert to_literal({"x": [D("0.0")]}, dict[str, list[D]]) == to_literal({"x": [D("-0")]}, dict[str, list[D]])
    assert h(D("1.5"), D) != h(D("1.51"), D)


def test_aware_datetimes_of_one_instant_are_one_literal() -> None:
    utc = datetime.datetime(2026, 5, 1, 12, tzinfo=datetime.UTC)
    paris = utc.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert to_literal(utc, datetime.datetime) == to_literal(paris, datetime.datetime)


def test_a_value_hashes_the_same_inline_and_in_the_blob_store() -> None:
    literal = to_literal("x" * 100_000, str)
    reference, blobs = offload(literal, 1024)
    assert reference != literal and blobs
    assert literal_hash(reference) == literal_hash(literal)


def test_inputs_hash_ignores_order_and_ignored_inputs() -> None:
    a, b = to_literal(1, int), to_literal("s", str)
    assert inputs_hash({"a": a, "b": b}) == inputs_hash({"b": b, "a": a})
    assert inputs_hash({"a": a, "b": b}, ignore=["b"]) == inputs_hash({"a": a, "b": to_literal("t", str)}, ["b"])
    assert inputs_hash({"a": a, "b": b}) != inputs_hash({"a": a, "b": to_literal("t", str)})
    assert inputs_hash({"ab": a}) != inputs_hash({"a": a})


def test_the_interface_hash_follows_the_typed_signature() -> None:
    @task(cache=True)
    def one(x: int) -> int:
        return x

    @task(cache=True)
    def same(x: int) -> int:
        return x + 1

    @task(cache=True)
    def retyped(x: float) -> int:
        return int(x)

    @task(cache=True)
    def renamed(y: int) -> int:
        return y

    assert one.options.cache_interface == same.options.cache_interface
    assert one.options.cache_interface != retyped.options.cache_interface
    assert one.options.cache_interface != renamed.options.cache_interface


def test_cache_options_without_cache_are_refused() -> None:
    with pytest.raises(CompileError, match="add cache=True"):

        @task(cache_version="2")
        def f(x: int) -> int:
            return x

    with pytest.raises(CompileError, match="cache_ttl must be positive"):

        @task(cache=True, cache_ttl=0)
        def g(x: int) -> int:
            return x

    @task(cache=True, cache_ttl=datetime.timedelta(hours=1))
    def k(x: int) -> int:
        return x

    assert k.options.cache_ttl == 3600.0


_KEY_SCRIPT = """
import datetime, decimal
from engine._literals import to_literal
from engine.interfaces import CacheKey
from engine.literals import inputs_hash
inputs = {
    "f": to_literal(-0.0, float),
    "d": to_literal(decimal.Decimal("2.50"), decimal.Decimal),
    "t": to_literal(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), datetime.datetime),
    "m": to_literal({"b": [1, 2], "a": {"z": 1.0, "y": None}}, dict[str, object]),
    "s": to_literal({3, 1, 2}, set[int]),
}
print(CacheKey("p", "d", "train", "1", "sig", inputs_hash(inputs)).digest)
"""


def test_a_cache_key_is_the_same_in_other_processes() -> None:
    digests = set()
    for seed in ("0", "1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", _KEY_SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert len(next(iter(digests))) == 64
    assert CacheKey("p", "d", "t", "1", "i", "x").digest != CacheKey("p", "d", "t", "2", "i", "x").digest


_MAIN_SCRIPT = """
from engine._literals import to_literal, from_literal
from engine.literals import literal_hash
class Config:  # a class of __main__: cloudpickle writes it by value, differently in each process
    def __init__(self, depth):
        self.depth = depth
        self.weights = {"a": [1.5, 2.0]}
literal = to_literal([Config(3)], list[Config])
assert from_literal(literal, list[Config])[0].depth == 3
print(literal_hash(literal))
"""


def test_a_constant_pickled_from_main_hashes_the_same_in_other_processes() -> None:
    digests = set()
    for seed in ("0", "1", "777"):
        out = subprocess.run(
            [sys.executable, "-c", _MAIN_SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
