"""Choose the number of neighbours of a KNN classifier on scikit-learn's bundled wine dataset.

The ``@dynamic`` ``search`` loops over the candidate ``k`` values (known only at run time) and
trains one classifier per ``k``; ``best`` keeps the most accurate.

Run it with ``python examples/knn.py`` or ``slipstream run examples/knn.py:wf --max_k 15``.
"""

from __future__ import annotations

import dataclasses

from engine import dynamic, task, workflow


@dataclasses.dataclass
class KnnResult:
    """A classifier's ``k`` and its cross-validated accuracy."""

    k: int
    accuracy: float


@task
def candidates(max_k: int) -> list[int]:
    """The odd values of ``k`` up to ``max_k``."""
    return list(range(1, max_k + 1, 2))


@task(cache=True, cache_version="1")
def evaluate(k: int, dataset: str) -> KnnResult:
    """Cross-validate a scaled KNN classifier with ``k`` neighbours."""
    from sklearn import datasets
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    return KnnResult(k=k, accuracy=float(cross_val_score(model, X, y, cv=5).mean()))


@task
def best(results: list[KnnResult]) -> KnnResult:
    """The most accurate result; the smaller ``k`` on ties."""
    return max(results, key=lambda r: (r.accuracy, -r.k))


@dynamic
def search(ks: list[int], dataset: str) -> KnnResult:
    """Evaluate every ``k`` (a loop over a run-time list) and keep the best."""
    results = [evaluate(k=k, dataset=dataset) for k in ks]
    return best(results=results)


@workflow
def wf(max_k: int = 15, dataset: str = "wine") -> KnnResult:
    """Find the best ``k`` up to ``max_k`` on a bundled dataset (``wine`` or ``iris``)."""
    return search(ks=candidates(max_k=max_k), dataset=dataset)


if __name__ == "__main__":
    result = wf(max_k=15)
    print(f"best k = {result.k}, cross-validated accuracy = {result.accuracy:.4f}")
