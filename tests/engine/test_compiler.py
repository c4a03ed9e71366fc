"""The compiler: spec shape, validation errors, Promise misuse, versions, spec encoding."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from engine import CompileError, TypeMismatch, UnknownInput, dynamic, map_task, task, workflow
from engine._compiler import spec_version
from engine.models import (
    ArrayNode,
    DictBinding,
    DynamicNode,
    InputBinding,
    ListBinding,
    LiteralBinding,
    OutputRef,
    SubworkflowNode,
    TaskNode,
    TypedName,
    WorkflowSpec,
)

ROOT = Path(__file__).resolve().parents[2]


class Pair(NamedTuple):
    a: int
    b: str


@dataclasses.dataclass
class Box:
    v: int


@task
def produce(x: int) -> int:
    return x


@task
def produce_str(x: int) -> str:
    return str(x)


@task
def consume(a: int, b: int = 1) -> int:
    return a + b


@task
def pair(x: int) -> Pair:
    return Pair(x, str(x))


@task
def nothing(x: int) -> None:
    return None


@task
def take_list(xs: list[int]) -> int:
    return sum(xs)


@task
def take_dict(d: dict[str, int]) -> int:
    return sum(d.values())


@task
def take_box(b: Box) -> int:
    return b.v


@task
def take_float(f: float, label: str | None = None) -> float:
    return f


@dynamic
def fan(n: int) -> list[int]:
    return [produce(x=i) for i in range(n)]


@workflow
def sub(x: int) -> int:
    return consume(a=produce(x=x))


@workflow
def outer_sub(x: int) -> int:
    return sub(x=x)


# --- a workflow using every node and binding kind ------------------------------------------------


@workflow(failure_policy="finish_executable", max_parallelism=4)
def everything(x: int, scale: float = 2.0, names: list[str] = ["a", "b"]) -> Pair:  # noqa: B006
    p = produce(x=x)
    a, b = pair(x=p)
    c = consume(a=a)  # deduplicated id: consume
    d = consume(a=c, b=7)  # consume-2
    s = take_list(xs=[p, c, 3])
    t = take_dict(d={"z": d, "y": s})
    m = map_task(functools.partial(consume, b=c))(a=[1, 2, p])
    m2 = map_task(consume, min_success_ratio=0.5)(a=[4, 5])
    take_float(f=x)  # int promise into a float input
    take_float(f=scale)
    fan(n=t)
    sub(x=t)
    outer_sub(x=d)
    take_list(xs=m)
    take_list(xs=[1])
    del m2
    return Pair(a=a, b=b)


def test_spec_nodes_in_order_with_bindings() -> None:
    spec = everything.spec
    ids = [n.id for n in spec.nodes]
    assert ids == [
        "produce",
        "pair",
        "consume",
        "consume-2",
        "take_list",
        "take_dict",
        "map_consume",
        "map_consume-2",
        "take_float",
        "take_float-2",
        "fan",
        "sub",
        "outer_sub",
        "take_list-2",
        "take_list-3",
    ]
    nodes = {n.id: n for n in spec.nodes}
    assert nodes["produce"].inputs == {"x": InputBinding("x")}
    assert nodes["pair"].inputs == {"x": OutputRef("produce", "o0")}
    assert nodes["pair"].interface_outputs == [TypedName("a", "int"), TypedName("b", "str")]
    assert nodes["consume"].inputs == {"a": OutputRef("pair", "a")}  # default b left to the task
    assert nodes["consume-2"].inputs["b"] == LiteralBinding(b"\x07")
    assert nodes["take_list"].inputs["xs"] == ListBinding(
        [OutputRef("produce", "o0"), OutputRef("consume", "o0"), LiteralBinding(b"\x03")]
    )
    assert nodes["take_dict"].inputs["d"] == DictBinding(
        {"y": OutputRef("take_list", "o0"), "z": OutputRef("consume-2", "o0")}
    )
    arr = nodes["map_consume"]
    assert isinstance(arr, ArrayNode)
    assert arr.mapped == ["a"]
    assert arr.inputs["b"] == OutputRef("consume", "o0")
    assert arr.interface_outputs == [TypedName("o0", "list[int]")]
    assert nodes["map_consume-2"].interface_outputs == [TypedName("o0", "list[int | None]")]
    assert nodes["map_consume-2"].min_success_ratio == 0.5
    assert isinstance(nodes["fan"], DynamicNode)
    assert isinstance(nodes["sub"], SubworkflowNode) and nodes["sub"].workflow == "sub"
    assert set(spec.subworkflows) == {"sub", "outer_sub"}  # sub of outer_sub hoisted, stored once
    assert spec.subworkflows["outer_sub"].subworkflows == {}
    assert isinstance(nodes["take_float"], TaskNode)
    assert spec.output_bindings == {"a": OutputRef("pair", "a"), "b": OutputRef("pair", "b")}
    assert spec.inputs == [
        TypedName("x", "int"),
        TypedName("scale", "float", True),
        TypedName("names", "list[str]", True),
    ]
    assert spec.outputs == [TypedName("a", "int"), TypedName("b", "str")]
    assert set(spec.defaults) == {"scale", "names"}
    assert spec.failure_policy == "finish_executable"
    assert spec.max_parallelism == 4
    assert len(spec.version) == 64
    assert all("/" not in i for i in ids)


def test_task_ref_and_options_are_in_the_node() -> None:
    @task(retries=3, timeout=5, cache=True, cache_version="2")
    def opt(x: int) -> int:
        return x

    @workflow
    def wf_opt(x: int) -> int:
        return opt(x=x)

    node = wf_opt.spec.nodes[0]
    assert node.options.retries == 3 and node.options.timeout == 5.0 and node.options.cache
    assert node.task.name == "opt"
    assert node.task.qualname.endswith("<locals>.opt")
    assert node.task.pickled is not None  # not importable: shipped by value


def test_spec_round_trips_through_msgpack_and_json() -> None:
    spec = everything.spec
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(spec), type=WorkflowSpec) == spec
    assert msgspec.json.decode(msgspec.json.encode(spec), type=WorkflowSpec) == spec
    assert spec_version(spec) == spec.version


def test_workflow_returning_none_and_constants() -> None:
    @workflow
    def no_out(x: int) -> None:
        nothing(x=x)

    assert no_out.spec.outputs == [] and no_out.spec.output_bindings == {}

    @workflow
    def const_out(x: int) -> list[int]:
        return [produce(x=x), 5]

    assert const_out.spec.output_bindings["o0"] == ListBinding([OutputRef("produce", "o0"), LiteralBinding(b"\x05")])

    @workflow
    def unannotated(x: int):  # type: ignore[no-untyped-def]
        return produce(x=x), produce_str(x=x)

    assert [o.name for o in unannotated.spec.outputs] == ["o0", "o1"]
    assert unannotated.spec.outputs[1].type == "str"


def test_node_ids_are_deterministic() -> None:
    def build() -> list[str]:
        @workflow
        def ids(x: int) -> int:
            a = produce(x=x)
            b = produce(x=a)
            c = produce(x=b)
            return consume(a=c)

        return [n.id for n in ids.spec.nodes]

    assert build() == build() == ["produce", "produce-2", "produce-3", "consume"]


# --- negative cases ------------------------------------------------------------------------------


def _unknown_input() -> None:
    @workflow
    def wf_unknown(x: int) -> int:
        return consume(a=x, c=1)


def _missing_input() -> None:
    @workflow
    def wf_missing(x: int) -> int:
        return consume(b=x)


def _promise_type_mismatch() -> None:
    @workflow
    def wf_mismatch(x: int) -> int:
        return consume(a=produce_str(x=x))


def _constant_type_mismatch() -> None:
    @workflow
    def wf_const(x: int) -> int:
        return consume(a=x, b="seven")


def _positional() -> None:
    @workflow
    def wf_positional(x: int) -> int:
        return consume(x)


def _unpack_too_many() -> None:
    @workflow
    def wf_unpack3(x: int) -> int:
        a, _b, _c = pair(x=x)
        return a


def _unpack_too_few() -> None:
    @workflow
    def wf_unpack1(x: int) -> int:
        (a,) = pair(x=x)
        return a


def _return_arity() -> None:
    @workflow
    def wf_arity(x: int) -> Pair:
        return produce(x=x), produce_str(x=x), produce(x=x)


def _unused_input() -> None:
    @workflow
    def wf_unused(x: int, unused_y: int) -> int:
        return produce(x=x)


def _list_item_mismatch() -> None:
    @workflow
    def wf_list(x: int) -> int:
        return take_list(xs=[produce(x=x), produce_str(x=x)])


def _dict_item_mismatch() -> None:
    @workflow
    def wf_dict(x: int) -> int:
        return take_dict(d={"k": produce_str(x=x)})


def _sub_unknown() -> None:
    @workflow
    def wf_sub_unknown(x: int) -> int:
        return sub(y=x)


def _sub_mismatch() -> None:
    @workflow
    def wf_sub_mismatch(x: int) -> int:
        return sub(x=produce_str(x=x))


def _map_unknown() -> None:
    @workflow
    def wf_map_unknown(x: int) -> list[int]:
        return map_task(consume)(zz=[x])


def _map_not_a_list() -> None:
    @workflow
    def wf_map_scalar(x: int) -> list[int]:
        return map_task(consume)(a=produce(x=x))


def _map_twice_bound() -> None:
    @workflow
    def wf_map_twice(x: int) -> list[int]:
        return map_task(functools.partial(consume, b=x))(a=[1], b=[2])


def _return_task_object() -> None:
    @workflow
    def wf_ret_task(x: int) -> int:
        produce(x=x)
        return produce  # type: ignore[return-value]


def _return_value_without_outputs() -> None:
    @workflow
    def wf_ret_none(x: int) -> None:
        return produce(x=x)  # type: ignore[return-value]


def _return_type_mismatch() -> None:
    @workflow
    def wf_ret_type(x: int) -> int:
        return produce_str(x=x)  # type: ignore[return-value]


def _uncalled_task_argument() -> None:
    @workflow
    def wf_uncalled(x: int) -> int:
        return consume(a=produce)


def _promise_in_dataclass() -> None:
    @workflow
    def wf_box(x: int) -> int:
        return take_box(b=Box(v=x))


def _unpack_no_outputs() -> None:
    @workflow
    def wf_unpack_none(x: int) -> int:
        a, _b = nothing(x=x)
        return a


def _promise_from_other_workflow() -> None:
    @workflow
    def wf_outer(x: int) -> int:
        @workflow
        def wf_inner(y: int) -> int:
            return consume(a=x, b=y)

        return produce(x=x)


def _set_of_promises() -> None:
    @workflow
    def wf_set(x: int) -> int:
        return take_list(xs={produce(x=x)})


def _sub_positional() -> None:
    @workflow
    def wf_sub_pos(x: int) -> int:
        return sub(x)


def _missing_task_annotation() -> None:
    @task
    def untyped_task(x, y: int) -> int:  # type: ignore[no-untyped-def]
        return y


def _missing_workflow_annotation() -> None:
    @workflow
    def wf_untyped(x) -> int:  # type: ignore[no-untyped-def]
        return produce(x=x)


def _bad_default() -> None:
    @task
    def bad_default(count: int = "three") -> int:  # type: ignore[assignment]
        return count


def _return_none_for_output() -> None:
    @workflow
    def wf_ret_missing(x: int) -> int:
        produce(x=x)


def _dynamic_positional() -> None:
    @workflow
    def wf_dyn_pos(x: int) -> list[int]:
        return fan(x)


NEGATIVE: list[tuple[Callable[[], None], type[Exception], list[str]]] = [
    (_unknown_input, UnknownInput, ["wf_unknown", "'consume'", "'c'"]),
    (_missing_input, CompileError, ["wf_missing", "'consume'", "'a'"]),
    (_promise_type_mismatch, TypeMismatch, ["wf_mismatch", "'consume'", "'a'", "int", "str"]),
    (_constant_type_mismatch, TypeMismatch, ["wf_const", "'consume'", "'b'", "int", "str"]),
    (_positional, CompileError, ["wf_positional", "'consume'", "keyword", "a=..."]),
    (_unpack_too_many, CompileError, ["wf_unpack3", "'pair'", "2 outputs", "unpack"]),
    (_unpack_too_few, CompileError, ["wf_unpack1", "'pair'", "2 outputs"]),
    (_return_arity, CompileError, ["wf_arity", "3 values", "2 outputs", "'a'", "'b'"]),
    (_unused_input, CompileError, ["wf_unused", "'unused_y'", "used by no node"]),
    (_list_item_mismatch, TypeMismatch, ["wf_list", "'take_list'", "'xs'", "[1]", "str"]),
    (_dict_item_mismatch, TypeMismatch, ["wf_dict", "'take_dict'", "'d'", "['k']", "str"]),
    (_sub_unknown, UnknownInput, ["wf_sub_unknown", "'sub'", "'y'"]),
    (_sub_mismatch, TypeMismatch, ["wf_sub_mismatch", "'sub'", "'x'", "str"]),
    (_map_unknown, UnknownInput, ["wf_map_unknown", "'map_consume'", "'zz'"]),
    (_map_not_a_list, TypeMismatch, ["wf_map_scalar", "'map_consume'", "'a'", "list[int]"]),
    (_map_twice_bound, CompileError, ["wf_map_twice", "'map_consume'", "'b'", "partial"]),
    (_return_task_object, CompileError, ["wf_ret_task", "'o0'", "'produce'", "call it"]),
    (_return_value_without_outputs, CompileError, ["wf_ret_none", "no outputs", "annotate"]),
    (_return_type_mismatch, TypeMismatch, ["wf_ret_type", "'o0'", "int", "str"]),
    (_uncalled_task_argument, CompileError, ["wf_uncalled", "'consume'", "'a'", "call it"]),
    (_promise_in_dataclass, CompileError, ["wf_box", "'take_box'", "'b'", "Promise"]),
    (_unpack_no_outputs, CompileError, ["wf_unpack_none", "no outputs", "unpack"]),
    (_promise_from_other_workflow, CompileError, ["wf_inner", "'consume'", "'a'", "wf_outer", "input of this"]),
    (_set_of_promises, CompileError, ["wf_set", "'take_list'", "'xs'", "set"]),
    (_sub_positional, CompileError, ["wf_sub_pos", "'sub'", "keyword", "x=..."]),
    (_missing_task_annotation, CompileError, ["untyped_task", "'x'", "annotation"]),
    (_missing_workflow_annotation, CompileError, ["wf_untyped", "'x'", "annotation"]),
    (_bad_default, TypeMismatch, ["bad_default", "'count'", "int", "str"]),
    (_return_none_for_output, CompileError, ["wf_ret_missing", "'o0'", "None"]),
    (_dynamic_positional, CompileError, ["wf_dyn_pos", "'fan'", "keyword"]),
]


@pytest.mark.parametrize(("build", "error", "fragments"), NEGATIVE, ids=[b.__name__.strip("_") for b, _, _ in NEGATIVE])
def test_invalid_workflows_are_rejected(
    build: Callable[[], None], error: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        build()
    assert type(info.value) is error
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --- Promise misuse ------------------------------------------------------------------------------


def _iterate(p: Any) -> Any:
    return [x for x in p]


MISUSE: list[tuple[str, Callable[[Any], Any]]] = [
    ("iterate", _iterate),
    ("index", lambda p: p[0]),
    ("len", len),
    ("bool", lambda p: 1 if p else 0),
    ("not", lambda p: not p),
    ("in", lambda p: 1 in p),
    ("lt", lambda p: p < 1),
    ("le", lambda p: p <= 1),
    ("gt", lambda p: p > 1),
    ("eq", lambda p: p == 1),
    ("ne", lambda p: p != 1),
    ("add", lambda p: p + 1),
    ("radd", lambda p: 1 + p),
    ("sub", lambda p: p - 1),
    ("mul", lambda p: p * 2),
    ("div", lambda p: p / 2),
    ("neg", lambda p: -p),
    ("sum", sum),
    ("int", int),
    ("float", float),
    ("str", str),
    ("format", lambda p: f"{p}"),
    ("format_spec", lambda p: format(p, ">5")),
    ("attribute", lambda p: p.upper),
    ("call", lambda p: p()),
    ("range", lambda p: range(p)),
    ("sorted", lambda p: sorted([p, p])),
]


@pytest.mark.parametrize(("name", "misuse"), MISUSE, ids=[n for n, _ in MISUSE])
def test_promise_misuse_points_to_dynamic(name: str, misuse: Callable[[Any], Any]) -> None:
    def build() -> None:
        @workflow
        def wf_misuse(x: int) -> int:
            p = produce(x=x)
            misuse(p)
            return p

    with pytest.raises(CompileError) as info:
        build()
    assert "@dynamic" in str(info.value)
    assert "wf_misuse" in str(info.value)


def test_promise_repr_and_identity_still_work() -> None:
    seen: list[str] = []

    @workflow
    def wf_repr(x: int) -> int:
        p = produce(x=x)
        seen.append(repr(p))
        assert p is p
        assert len({p: 1}) == 1  # hashable by identity
        return p

    assert seen == ["Promise(output 'o0' of node 'produce': int)"]


# --- versions ------------------------------------------------------------------------------------

_VERSIONED_MODULE = """
from __future__ import annotations
from engine import task, workflow

@task
def step(x: int) -> int:
    return x + {increment}

@workflow
def wf(x: int) -> int:
    return step(x=step(x=x))
"""


def _compile_module(tmp_path: Path, increment: str) -> str:
    (tmp_path / "versioned_wf_mod.py").write_text(_VERSIONED_MODULE.format(increment=increment))
    sys.modules.pop("versioned_wf_mod", None)
    importlib.invalidate_caches()
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module("versioned_wf_mod").wf.spec.version
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("versioned_wf_mod", None)


def test_same_source_same_version_edited_body_new_version(tmp_path: Path) -> None:
    sys.dont_write_bytecode, old = True, sys.dont_write_bytecode
    try:
        first = _compile_module(tmp_path, "1")
        again = _compile_module(tmp_path, "1")
        edited = _compile_module(tmp_path, "100")
    finally:
        sys.dont_write_bytecode = old
    assert first == again
    assert edited != first


def test_version_is_stable_across_processes() -> None:
    code = textwrap.dedent(
        """
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("feature_pruning", "examples/feature_pruning.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["feature_pruning"] = module
        spec.loader.exec_module(module)
        print(module.wf.spec.version)
        """
    )
    versions = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(versions) == 1 and len(versions.pop()) == 64


def test_version_follows_tasks_called_inside_a_dynamic(tmp_path, monkeypatch) -> None:
    """Editing a task that only a @dynamic body calls changes the workflow version."""
    import importlib
    import sys

    source = '''
from engine import dynamic, task, workflow

@task
def inner(x: int) -> int:
    return x + {increment}

@dynamic
def d(x: int) -> int:
    return inner(x=x)

@workflow
def wf(x: int = 1) -> int:
    return d(x=x)
'''
    versions = []
    for round_, increment in enumerate((1, 2, 1)):
        directory = tmp_path / f"v{round_}"  # the same module name, a fresh file each time
        directory.mkdir()
        (directory / "dynver.py").write_text(source.format(increment=increment))
        with monkeypatch.context() as patch:
            patch.syspath_prepend(str(directory))
            importlib.invalidate_caches()
            module = importlib.import_module("dynver")
            versions.append(module.wf.spec.version)
            sys.modules.pop("dynver", None)
    assert versions[0] != versions[1]
    assert versions[0] == versions[2]


def test_multi_output_call_cannot_be_used_as_a_value() -> None:
    import typing

    from engine import CompileError, task, workflow

    class Pair(typing.NamedTuple):
        a: int
        b: int

    @task
    def pair(x: int) -> Pair:
        return Pair(x, x)

    @task
    def show(s: str) -> str:
        return s

    with pytest.raises(CompileError, match="@dynamic"):

        @workflow
        def in_condition(x: int) -> str:
            p = pair(x=x)
            if p:
                return show(s="yes")
            return show(s="no")

    with pytest.raises(CompileError, match="@dynamic"):

        @workflow
        def in_fstring(x: int) -> str:
            return show(s=f"{pair(x=x)}")


def test_composite_bindings_are_checked_against_the_input_type() -> None:
    from engine import TypeMismatch, task, workflow

    @task
    def one(x: int) -> int:
        return x

    @task
    def takes_pair(t: tuple[int, int]) -> int:
        return sum(t)

    @task
    def takes_int_keys(d: dict[int, int]) -> int:
        return len(d)

    with pytest.raises(TypeMismatch, match=r"2 items.*given 1"):

        @workflow
        def short_tuple(x: int) -> int:
            return takes_pair(t=[one(x=x)])

    with pytest.raises(TypeMismatch, match="keys are not str"):

        @workflow
        def str_keys(x: int) -> int:
            return takes_int_keys(d={"k": one(x=x)})


def test_version_is_stable_across_processes_without_source() -> None:
    """Code given on stdin has no source file: the code object is hashed, without memory addresses."""
    import subprocess
    import sys

    script = (
        "from engine import task, workflow\n"
        "@task\n"
        "def t(x: int) -> int:\n"
        "    return sorted([x, 1], key=lambda v: -v)[0]\n"
        "@workflow\n"
        "def wf(x: int = 1) -> int:\n"
        "    return t(x=x)\n"
        "print(wf.spec.version)\n"
    )
    runs = [
        subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0].strip()) == 64
