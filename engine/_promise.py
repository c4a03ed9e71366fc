"""``Promise``: the value a task call returns while a workflow is being compiled.

A workflow body runs once, at decoration time, to record the graph; a Promise stands for a value
that will only exist when the workflow runs. Everything that would need that value now (``if``,
loops, indexing, arithmetic, ``str``) raises ``CompileError`` and points to ``@dynamic``, whose
body runs at execution time with concrete values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from engine._literals import Placeholder
from engine._types import type_repr
from engine.errors import CompileError

if TYPE_CHECKING:
    from engine._compiler import CompileContext
    from engine.models import InputBinding, OutputRef

__all__ = ["NodeOutputs", "Promise"]

_FIX = (
    "a Promise is a placeholder for a value that exists only when the workflow runs; the workflow body "
    "runs once, at compile time, to build the graph. Do this inside a @task, or use @dynamic, whose body "
    "runs at execution time with concrete values"
)


class Promise(Placeholder):
    """A placeholder for a node output or workflow input, inside a ``@workflow`` or ``@dynamic`` body.

    Pass it to other tasks as a keyword argument, put it in a list or dict argument, or return it.
    The codec refuses to encode it (``Placeholder``), even nested inside a constant.
    """

    __slots__ = ("_binding", "_ctx", "_type", "_what")

    def __init__(self, ctx: CompileContext, binding: OutputRef | InputBinding, tp: Any, what: str) -> None:
        """Create a Promise (the compiler does this; users never need to).

        Args:
            ctx: the compile context the Promise belongs to.
            binding: where its value comes from.
            tp: its type.
            what: a readable description (``output 'o0' of node 'train'``).
        """
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_binding", binding)
        object.__setattr__(self, "_type", tp)
        object.__setattr__(self, "_what", what)

    def __repr__(self) -> str:
        return f"Promise({self._what}: {type_repr(self._type)})"

    def _misuse(self, action: str) -> NoReturn:
        raise CompileError(f"{self._ctx.label()}: cannot {action} {self!r}: {_FIX}")

    # identity stays usable (dict keys, `is`), value semantics do not
    def __hash__(self) -> int:
        return id(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        self._misuse(f"read attribute {name!r} of")

    def __setattr__(self, name: str, value: Any) -> None:
        self._misuse(f"set attribute {name!r} of")

    def __iter__(self) -> NoReturn:
        self._misuse("iterate over (or unpack)")

    def __getitem__(self, key: Any) -> NoReturn:
        self._misuse(f"index ([{key!r}])")

    def __len__(self) -> NoReturn:
        self._misuse("take len() of")

    def __bool__(self) -> NoReturn:
        self._misuse("use in a condition (bool(), if, while, and/or/not)")

    def __contains__(self, item: Any) -> NoReturn:
        self._misuse("test membership (`in`) in")

    def __eq__(self, other: object) -> NoReturn:  # type: ignore[override]
        self._misuse("compare (==)")

    def __ne__(self, other: object) -> NoReturn:  # type: ignore[override]
        self._misuse("compare (!=)")

    def __lt__(self, other: Any) -> NoReturn:
        self._misuse("compare (<)")

    def __le__(self, other: Any) -> NoReturn:
        self._misuse("compare (<=)")

    def __gt__(self, other: Any) -> NoReturn:
        self._misuse("compare (>)")

    def __ge__(self, other: Any) -> NoReturn:
        self._misuse("compare (>=)")

    def __int__(self) -> NoReturn:
        self._misuse("convert with int()")

    def __float__(self) -> NoReturn:
        self._misuse("convert with float()")

    def __complex__(self) -> NoReturn:
        self._misuse("convert with complex()")

    def __index__(self) -> NoReturn:
        self._misuse("use as an index")

    def __str__(self) -> str:
        self._misuse("convert with str() (or print/f-string)")

    def __format__(self, spec: str) -> str:
        self._misuse("format (format()/f-string)")

    def __bytes__(self) -> bytes:
        self._misuse("convert with bytes()")

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._misuse("call")

    def __reduce__(self) -> NoReturn:
        self._misuse("pickle")

    def __enter__(self) -> NoReturn:
        self._misuse("use as a context manager")

    def __exit__(self, *exc: object) -> None:
        return None

    def __round__(self, ndigits: int | None = None) -> NoReturn:
        self._misuse("round()")

    def __neg__(self) -> NoReturn:
        self._misuse("negate")

    def __pos__(self) -> NoReturn:
        self._misuse("apply unary + to")

    def __abs__(self) -> NoReturn:
        self._misuse("take abs() of")

    def __invert__(self) -> NoReturn:
        self._misuse("invert (~)")


def _arith(symbol: str) -> Any:
    def op(self: Promise, other: Any) -> NoReturn:
        self._misuse(f"do arithmetic ({symbol}) with")

    return op


for _name, _symbol in [
    ("add", "+"),
    ("sub", "-"),
    ("mul", "*"),
    ("matmul", "@"),
    ("truediv", "/"),
    ("floordiv", "//"),
    ("mod", "%"),
    ("divmod", "divmod"),
    ("pow", "**"),
    ("lshift", "<<"),
    ("rshift", ">>"),
    ("and", "&"),
    ("xor", "^"),
    ("or", "|"),
]:
    for _prefix in ("", "r", "i"):
        if _prefix == "i" and _name == "divmod":
            continue
        setattr(Promise, f"__{_prefix}{_name}__", _arith(_symbol))


class NodeOutputs(tuple):  # type: ignore[type-arg]
    """The Promises of a multi-output call (a ``typing.NamedTuple`` return type).

    Unpack it (``a, b = t()``), index it, or read outputs by name (``t().score``).
    """

    _names: tuple[str, ...]
    _node: str
    _ctx: CompileContext

    def __new__(cls, ctx: CompileContext, node: str, names: list[str], promises: list[Promise]) -> NodeOutputs:
        """Bundle the output Promises of node ``node``.

        Args:
            ctx: the compile context.
            node: the node id.
            names: the output names.
            promises: one Promise per output.

        Returns:
            The tuple of Promises.
        """
        self = super().__new__(cls, promises)
        self._ctx = ctx
        self._node = node
        self._names = tuple(names)
        return self

    def __iter__(self) -> Any:
        # Unpacking into the wrong number of names raises ValueError after this; the compiler turns
        # it into a CompileError naming this node (see CompileContext.run_body).
        self._ctx.last_unpacked = (self._node, len(self))
        return super().__iter__()

    def __getattr__(self, name: str) -> Promise:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"node {self._node!r} has no output {name!r}; its outputs are {list(self._names)}")
        return self[self._names.index(name)]

    def __repr__(self) -> str:
        return f"NodeOutputs({self._node!r}, {', '.join(self._names)})"

    # a tuple's truthiness, str() and equality would quietly turn promises into constants
    def _misuse(self, action: str) -> NoReturn:
        raise CompileError(f"{self._ctx.label()}: cannot {action} the outputs of node {self._node!r}: {_FIX}")

    def __bool__(self) -> NoReturn:
        self._misuse("use in a condition (bool(), if, while, and/or/not)")

    def __str__(self) -> str:
        self._misuse("convert with str() (or print/f-string)")

    def __format__(self, spec: str) -> str:
        self._misuse("format (format()/f-string)")

    def __eq__(self, other: object) -> NoReturn:  # type: ignore[override]
        self._misuse("compare (==)")

    def __ne__(self, other: object) -> NoReturn:  # type: ignore[override]
        self._misuse("compare (!=)")

    def __contains__(self, item: object) -> NoReturn:
        self._misuse("test membership (`in`) in")

    __hash__ = tuple.__hash__
