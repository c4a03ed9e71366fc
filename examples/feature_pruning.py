"""Recursive feature pruning on scikit-learn's bundled diabetes dataset.

Each round trains one model per candidate feature to remove (a ``map_task``), keeps the removal
with the best cross-validated score, and recurses with one feature fewer: the ``@dynamic`` ``prune``
calls itself with the reduced list until ``depth`` rounds are done.

Run it with ``python examples/feature_pruning.py`` or ``slipstream run examples/feature_pruning.py:wf --depth 3``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import tempfile
from typing import NamedTuple

from engine import File, dynamic, map_task, task, workflow


@dataclasses.dataclass
class Result:
    """One trained candidate: the feature left out and the cross-validated R^2 without it."""

    removed: str
    score: float


@dataclasses.dataclass
class Round:
    """What one pruning round removed, and the score of the model without it."""

    removed: str
    score: float


@dataclasses.dataclass
class History:
    """Every round of pruning, in order."""

    rounds: list[Round]


class Prepared(NamedTuple):
    dataset: File
    features: list[str]


class Step(NamedTuple):
    features: list[str]
    history: History


@task(cache=True, cache_version="1")
def prepare() -> Prepared:
    """Write the diabetes dataset to a file that the training tasks read."""
    import numpy as np
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    digest = hashlib.sha256(data.data.tobytes()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"slipstream-diabetes-{digest}.npz")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, X=data.data, y=data.target, names=np.array(data.feature_names))
        os.replace(tmp, path)
    return Prepared(File(path), list(data.feature_names))


@task(cache=True, cache_version="1", retries=1)
def train(features: list[str], dataset: File, remove: str) -> Result:
    """Cross-validate a ridge regression on ``features`` minus ``remove``."""
    import numpy as np
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_score

    with dataset.open("rb") as fh:
        data = np.load(fh)
        X, y, names = data["X"], data["y"], list(data["names"])
    keep = [names.index(f) for f in features if f != remove]
    score = cross_val_score(Ridge(alpha=0.1), X[:, keep], y, cv=5, scoring="r2").mean()
    return Result(removed=remove, score=float(score))


@task
def choose(results: list[Result], features: list[str], history: History) -> Step:
    """Keep the removal with the best score; drop that feature."""
    best = max(results, key=lambda r: (r.score, r.removed))
    rounds = [*history.rounds, Round(removed=best.removed, score=best.score)]
    return Step(features=[f for f in features if f != best.removed], history=History(rounds=rounds))


@dynamic
def prune(depth: int, features: list[str], dataset: File, history: History) -> History:
    """Run ``depth`` pruning rounds: one map over the candidates, then recurse on the reduced list."""
    if depth <= 0 or len(features) <= 1:
        return history
    results = map_task(functools.partial(train, features=features, dataset=dataset))(remove=features)
    step = choose(results=results, features=features, history=history)
    return prune(depth=depth - 1, features=step.features, dataset=dataset, history=step.history)


@workflow
def wf(depth: int = 3) -> History:
    """Prune ``depth`` features from the diabetes dataset, one per round."""
    dataset, features = prepare()
    return prune(depth=depth, features=features, dataset=dataset, history=History(rounds=[]))


if __name__ == "__main__":
    history = wf(depth=3)
    for i, r in enumerate(history.rounds, 1):
        print(f"round {i}: removed {r.removed!r}, cross-validated R^2 {r.score:.4f}")
