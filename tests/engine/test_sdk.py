"""The authoring SDK: task options, interfaces, local calls, workflow I/O, dynamic expansion, runtime."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from engine import (
    CompileError,
    ConfigError,
    Dir,
    File,
    Resources,
    TypeMismatch,
    UnknownInput,
    dynamic,
    map_task,
    task,
    workflow,
)
from engine._literals import from_literal, to_literal
from engine._task import Task
from engine.models import (
    ArrayNode,
    DynamicNode,
    InputBinding,
    ListBinding,
    LiteralBinding,
    OutputRef,
    SubworkflowNode,
    TaskNode,
    TaskOptions,
    TypedName,
)
from engine.runtime import decode_inputs, encode_outputs, expand_dynamic, load_task


class Stats(NamedTuple):
    mean: float
    count: int


@dataclasses.dataclass
class Report:
    best: int
    scores: list[float]


class Blob:
    """Not natively supported: cloudpickled."""

    def __init__(self, v: int) -> None:
        self.v = v


@task
def double(x: int) -> int:
    return 2 * x


@task
def stats(xs: list[float]) -> Stats:
    return Stats(sum(xs) / len(xs), len(xs))


@task
def report(scores: list[float], best: int = 0) -> Report:
    return Report(best=best, scores=scores)


@task
def add(x: int, y: int = 10) -> int:
    return x + y


@task
def noop(x: int) -> None:
    return None


@workflow
def inner(x: int) -> int:
    return double(x=x)


@dynamic
def leaf(n: int) -> list[int]:
    return [double(x=i) for i in range(n)]


@dynamic
def tree(n: int, depth: int = 1) -> list[int]:
    if depth <= 0:
        return list(range(n))
    doubled = map_task(functools.partial(add, y=n))(x=list(range(n)))
    sub = inner(x=n)
    nested = tree(n=n, depth=depth - 1)
    leaf(n=sub)
    del nested
    return doubled


@workflow
def io_wf(
    x: int,
    scale: float = 1.5,
    names: list[str] = ["a"],  # noqa: B006
    when: datetime.date | None = None,
    data: File | None = None,
) -> Stats:
    return stats(xs=[double(x=x), scale])


# --- tasks ---------------------------------------------------------------------------------------


def test_task_attributes_and_options() -> None:
    @task(
        cache=True,
        cache_version="7",
        cache_serialize=True,
        cache_ignore_inputs=["y"],
        retries=2,
        timeout=datetime.timedelta(minutes=2),
        resources=Resources(cpu=2, mem="1Gi", gpu=0.5),
        executor="ray",
        secrets=["token"],
    )
    def opts(x: int, y: str = "a") -> int:
        return x

    assert isinstance(opts, Task)
    assert opts.name == "opts" and not opts.is_dynamic and not opts.is_async
    assert opts.options == TaskOptions(
        retries=2,
        timeout=120.0,
        cache=True,
        cache_version="7",
        cache_serialize=True,
        cache_ignore_inputs=("y",),
        resources=Resources(cpu=2, mem="1Gi", gpu=0.5),
        executor="ray",
        secrets=("token",),
        cache_interface=opts.options.cache_interface,  # the signature's hash: see tests/catalog
    )
    assert len(opts.options.cache_interface) == 32
    assert opts.interface.inputs["y"].has_default and opts.interface.inputs["y"].default == "a"
    assert not opts.interface.inputs["x"].has_default
    assert opts.interface.outputs == [("o0", int)]
    assert opts(x=3) == 3  # a plain call outside a workflow runs the function
    assert task(timeout=5)(lambda_free).options.timeout == 5.0
    assert opts.ref.source_hash and opts.ref.module == __name__


def lambda_free(x: int) -> int:
    return x


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"resources": {"cpu": 1}}, "Resources"),
        ({"cache_ignore_inputs": ["nope"]}, "nope"),
        ({"secrets": "token"}, "list of names"),
        ({"executor": 3}, "executor"),
    ],
)
def test_invalid_task_options(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CompileError) as info:
        task(**options)(lambda_free)
    assert fragment in str(info.value) and "lambda_free" in str(info.value)


def test_interface_outputs() -> None:
    assert stats.interface.outputs == [("mean", float), ("count", int)]
    assert stats.interface.output_tuple is Stats
    assert noop.interface.outputs == []

    async def coro(x: int) -> int:
        return x

    t = task(coro)
    assert t.is_async


def test_none_default_makes_input_optional() -> None:
    @task
    def opt(x: int = None) -> int:  # type: ignore[assignment]  # noqa: RUF013 - implicit Optional on purpose
        return x or 0

    assert opt.interface.inputs["x"].type == int | None


def test_fallback_type_warns_at_definition_not_at_call() -> None:
    with pytest.warns(UserWarning, match="'pickled_in'.*'b'.*Blob.*cloudpickled"):

        @task
        def pickled_in(b: Blob) -> int:
            return b.v

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pickled_in(b=Blob(4)) == 4
        assert encode_outputs(pickled_in, 4) == {"o0": to_literal(4, int)}
        assert decode_inputs(pickled_in, {"b": to_literal(Blob(5), Blob)})["b"].v == 5


def test_dynamic_is_a_task() -> None:
    assert isinstance(leaf, Task) and leaf.is_dynamic
    assert leaf(n=2) == [0, 2]  # outside a workflow the body runs with local task calls
    with pytest.raises(CompileError, match="async"):

        @dynamic
        async def bad(x: int) -> int:
            return x


def test_map_task_runs_locally_and_validates() -> None:
    assert map_task(double)(x=[1, 2, 3]) == [2, 4, 6]
    assert map_task(functools.partial(add, y=1))(x=[1, 2]) == [2, 3]

    @task
    def flaky(x: int) -> int:
        if x == 2:
            raise ValueError("boom")
        return x

    assert map_task(flaky, min_success_ratio=0.5)(x=[1, 2]) == [1, None]
    with pytest.raises(ValueError, match="boom"):
        map_task(flaky)(x=[1, 2])
    with pytest.raises(CompileError, match="equal lengths"):
        map_task(add)(x=[1, 2], y=[1])
    with pytest.raises(UnknownInput, match=r"'nope'.*'add'"):
        map_task(functools.partial(add, nope=1))
    with pytest.raises(CompileError, match="@dynamic"):
        map_task(leaf)
    with pytest.raises(CompileError, match="min_success_ratio"):
        map_task(add, min_success_ratio=0)
    with pytest.raises(CompileError, match="concurrency"):
        map_task(add, concurrency=0)
    with pytest.raises(CompileError, match="positional"):
        map_task(functools.partial(add, 1))
    with pytest.raises(CompileError, match="at most one"):
        map_task(stats)


# --- workflows: inputs and outputs ---------------------------------------------------------------


def test_encode_inputs_fills_defaults_and_validates() -> None:
    literals = io_wf.encode_inputs({"x": 3})
    assert set(literals) == {"x", "scale", "names", "when", "data"}
    assert from_literal(literals["scale"], float) == 1.5
    assert from_literal(literals["when"], datetime.date | None) is None
    assert literals["x"] == to_literal(3, int)

    with pytest.raises(UnknownInput) as unknown:
        io_wf.encode_inputs({"x": 1, "y": 2})
    assert "io_wf" in str(unknown.value) and "'y'" in str(unknown.value)
    with pytest.raises(TypeMismatch) as mismatch:
        io_wf.encode_inputs({"x": "three"})
    assert "io_wf" in str(mismatch.value) and "'x'" in str(mismatch.value) and "int" in str(mismatch.value)
    with pytest.raises(CompileError) as missing:
        io_wf.encode_inputs({})
    assert type(missing.value) is CompileError and "'x'" in str(missing.value) and "io_wf" in str(missing.value)


def test_decode_outputs() -> None:
    assert io_wf.decode_outputs({"mean": to_literal(2.0, float), "count": to_literal(3, int)}) == Stats(2.0, 3)
    assert inner.decode_outputs({"o0": to_literal(4, int)}) == 4

    @workflow
    def quiet(x: int) -> None:
        noop(x=x)

    assert quiet.decode_outputs({}) is None
    with pytest.raises(TypeMismatch, match="'o0'"):
        inner.decode_outputs({})


def test_parse_cli_inputs() -> None:
    parsed = io_wf.parse_cli_inputs(
        {"x": "4", "scale": "2.5", "names": '["p", "q"]', "when": "2024-01-02", "data": "/tmp/f.csv"}
    )
    assert parsed == {
        "x": 4,
        "scale": 2.5,
        "names": ["p", "q"],
        "when": datetime.date(2024, 1, 2),
        "data": File("/tmp/f.csv"),
    }
    assert io_wf.parse_cli_inputs({"when": "none"}) == {"when": None}

    @workflow
    def flags(on: bool, report_: Report | None = None) -> bool:
        return add(x=1) is not None and on

    assert flags.parse_cli_inputs({"on": "true"}) == {"on": True}
    assert flags.parse_cli_inputs({"on": "0"}) == {"on": False}
    assert flags.parse_cli_inputs({"report_": '{"best": 1, "scores": [0.5]}'}) == {"report_": Report(1, [0.5])}
    with pytest.raises(TypeMismatch) as bad_int:
        io_wf.parse_cli_inputs({"x": "four"})
    assert "io_wf" in str(bad_int.value) and "'x'" in str(bad_int.value)
    with pytest.raises(TypeMismatch, match="'names'"):
        io_wf.parse_cli_inputs({"names": "[1, 2"})
    with pytest.raises(TypeMismatch, match="'on'"):
        flags.parse_cli_inputs({"on": "maybe"})
    with pytest.raises(UnknownInput, match="'nope'"):
        io_wf.parse_cli_inputs({"nope": "1"})


def test_workflow_positional_call_outside_compile_is_rejected() -> None:
    with pytest.raises(CompileError, match="keyword"):
        inner(1)


def test_workflow_options_are_validated() -> None:
    with pytest.raises(CompileError, match="failure_policy"):
        workflow(failure_policy="yolo")(lambda_free)
    with pytest.raises(CompileError, match="max_parallelism"):
        workflow(max_parallelism=0)(lambda_free)


# --- dynamic expansion ---------------------------------------------------------------------------


def test_expand_dynamic_with_constants() -> None:
    spec = expand_dynamic(leaf, {"n": 3})
    assert spec.name == "leaf" and spec.inputs == [] and spec.version == ""
    assert [n.id for n in spec.nodes] == ["double", "double-2", "double-3"]
    assert all(isinstance(n, TaskNode) for n in spec.nodes)
    assert spec.nodes[2].inputs == {"x": LiteralBinding(to_literal(2, int))}
    assert spec.outputs == [TypedName("o0", "list[int]")]
    assert spec.output_bindings == {
        "o0": ListBinding([OutputRef("double", "o0"), OutputRef("double-2", "o0"), OutputRef("double-3", "o0")])
    }


def test_expand_dynamic_with_map_subworkflow_and_nested_dynamics() -> None:
    spec = expand_dynamic(tree, {"n": 2})  # depth defaults to 1
    kinds = [(n.id, type(n)) for n in spec.nodes]
    assert kinds == [("map_add", ArrayNode), ("inner", SubworkflowNode), ("tree", DynamicNode), ("leaf", DynamicNode)]
    arr = spec.nodes[0]
    assert arr.mapped == ["x"]
    assert arr.inputs == {"y": LiteralBinding(to_literal(2, int)), "x": LiteralBinding(to_literal([0, 1], list[int]))}
    assert spec.nodes[2].inputs == {"n": LiteralBinding(b"\x02"), "depth": LiteralBinding(b"\x00")}
    assert spec.nodes[3].inputs == {"n": OutputRef("inner", "o0")}
    assert set(spec.subworkflows) == {"inner"}
    assert spec.output_bindings == {"o0": OutputRef("map_add", "o0")}

    base = expand_dynamic(tree, {"n": 3, "depth": 0})
    assert base.nodes == []
    assert base.output_bindings == {"o0": LiteralBinding(to_literal([0, 1, 2], list[int]))}


def test_expand_dynamic_errors() -> None:
    with pytest.raises(CompileError, match="not a @dynamic"):
        expand_dynamic(double, {"x": 1})
    with pytest.raises(UnknownInput, match="'zz'"):
        expand_dynamic(leaf, {"zz": 1})
    with pytest.raises(CompileError, match="'n'"):
        expand_dynamic(leaf, {})

    @dynamic
    def misuse(n: int) -> int:
        p = double(x=n)
        return p + 1

    with pytest.raises(CompileError, match=r"dynamic 'misuse'.*@dynamic"):
        expand_dynamic(misuse, {"n": 1})


def test_workflow_with_dynamic_node() -> None:
    @workflow
    def uses_tree(n: int) -> list[int]:
        return tree(n=n)

    node = uses_tree.spec.nodes[0]
    assert isinstance(node, DynamicNode) and node.inputs == {"n": InputBinding("n")}
    assert node.task.name == "tree"


# --- runtime -------------------------------------------------------------------------------------


def test_load_task_by_import_and_by_pickle() -> None:
    assert load_task(double.ref) is double

    @task
    def local_only(x: int) -> int:
        return x + 1

    loaded = load_task(local_only.ref)
    assert loaded.name == "local_only" and loaded.fn(x=1) == 2


def test_load_errors() -> None:
    from engine.models import TaskRef

    with pytest.raises(ConfigError, match="cannot import module"):
        load_task(TaskRef("t", "no_such_module_xyz", "t", "h"))
    with pytest.raises(ConfigError, match="not found"):
        load_task(TaskRef("t", __name__, "no_such_task", "h"))
    with pytest.raises(ConfigError, match="not a @task"):
        load_task(TaskRef("t", __name__, "Blob", "h"))


def test_decode_inputs_and_encode_outputs() -> None:
    assert decode_inputs(add, {"x": to_literal(1, int)}) == {"x": 1, "y": 10}
    with pytest.raises(UnknownInput, match="'z'"):
        decode_inputs(add, {"z": b"\x01"})
    with pytest.raises(CompileError, match="'x'"):
        decode_inputs(add, {})
    assert encode_outputs(stats, Stats(1.0, 2)) == {"mean": to_literal(1.0, float), "count": to_literal(2, int)}
    assert encode_outputs(noop, None) == {}
    assert encode_outputs(report, Report(1, [2])) == {"o0": to_literal(Report(1, [2.0]), Report)}
    with pytest.raises(TypeMismatch) as info:
        encode_outputs(double, "x")
    assert "'double'" in str(info.value) and "'o0'" in str(info.value) and "int" in str(info.value)
    with pytest.raises(TypeMismatch, match="tuple of 2"):
        encode_outputs(stats, 1.0)
    with pytest.raises(TypeMismatch, match="no outputs"):
        encode_outputs(noop, 3)


# --- files ---------------------------------------------------------------------------------------


def test_file_and_dir(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    f = File(tmp_path / "a.txt")
    assert f.path == str(tmp_path / "a.txt") and f.exists()
    with f.open("r") as fh:
        assert fh.read() == "hello"
    assert from_literal(to_literal(f, File), File) == f
    d = Dir(tmp_path)
    assert [Path(x.path).name for x in d.files()] == ["a.txt", "b.txt"]


def test_types_local_to_a_function_resolve_for_every_decorator_form() -> None:
    """Hints name a class defined in the enclosing function: bare, with options, and @dynamic."""
    import dataclasses

    from engine import dynamic

    @dataclasses.dataclass
    class Local:
        a: int

    @task
    def bare(x: Local) -> Local:
        return x

    @task(retries=1)
    def with_options(x: Local) -> Local:
        return x

    @dynamic
    def dyn(x: Local) -> int:
        return x.a

    assert [t.interface.inputs["x"].type for t in (bare, with_options, dyn)] == [Local, Local, Local]
