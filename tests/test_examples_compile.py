"""The examples compile at import, into the node kinds they are meant to show."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from engine.models import ArrayNode, DynamicNode, OutputRef, TaskNode
from engine.runtime import expand_dynamic

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    module_name = f"examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pruning() -> ModuleType:
    return _load("feature_pruning")


@pytest.fixture(scope="module")
def knn() -> ModuleType:
    return _load("knn")


def test_feature_pruning_compiles(pruning: ModuleType) -> None:
    spec = pruning.wf.spec
    assert [(n.id, type(n)) for n in spec.nodes] == [("prepare", TaskNode), ("prune", DynamicNode)]
    assert spec.nodes[1].inputs["features"] == OutputRef("prepare", "features")
    assert [i.name for i in spec.inputs] == ["depth"] and spec.outputs[0].type == "History"
    assert len(spec.version) == 64


def test_feature_pruning_round_expands_to_map_and_recursion(pruning: ModuleType) -> None:
    inputs = {
        "depth": 2,
        "features": ["age", "bmi", "bp"],
        "dataset": pruning.File("/tmp/data.npz"),
        "history": pruning.History(rounds=[]),
    }
    sub = expand_dynamic(pruning.prune, inputs)
    assert [(n.id, type(n)) for n in sub.nodes] == [
        ("map_train", ArrayNode),
        ("choose", TaskNode),
        ("prune", DynamicNode),
    ]
    assert sub.nodes[0].mapped == ["remove"]
    assert set(sub.nodes[0].inputs) == {"features", "dataset", "remove"}
    assert sub.nodes[2].inputs["features"] == OutputRef("choose", "features")
    assert sub.output_bindings == {"o0": OutputRef("prune", "o0")}
    done = expand_dynamic(pruning.prune, {**inputs, "depth": 0})
    assert done.nodes == []


def test_knn_compiles_and_expands(knn: ModuleType) -> None:
    spec = knn.wf.spec
    assert [(n.id, type(n)) for n in spec.nodes] == [("candidates", TaskNode), ("search", DynamicNode)]
    sub = expand_dynamic(knn.search, {"ks": [1, 3, 5], "dataset": "wine"})
    assert [n.id for n in sub.nodes] == ["evaluate", "evaluate-2", "evaluate-3", "best"]
    assert sub.output_bindings == {"o0": OutputRef("best", "o0")}


def test_examples_import_without_sklearn() -> None:
    import subprocess

    code = (
        "import importlib.util, sys\n"
        "for name in ('feature_pruning', 'knn'):\n"
        "    spec = importlib.util.spec_from_file_location(name, f'examples/{name}.py')\n"
        "    m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m)\n"
        "print('sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=EXAMPLES.parent)
    assert out.stdout.strip() == "False"
