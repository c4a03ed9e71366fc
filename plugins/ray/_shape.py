"""Resource shapes of actor pools, and the cluster capacity they are counted against (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from engine.models import Resources

__all__ = ["Capacity", "Shape", "shape_of"]

_DEFAULT_CPU = Resources().cpu


class Shape(msgspec.Struct, frozen=True, order=True):
    """What one actor of a pool reserves on the cluster for its whole life.

    Attributes:
        cpus: logical CPUs (``num_cpus``).
        gpus: GPUs, fractions included (``num_gpus``: two 0.5 actors share one GPU).
        memory: bytes (``memory``), 0 for none.
    """

    cpus: float
    gpus: float = 0.0
    memory: int = 0

    def options(self) -> dict[str, float | int]:
        """The actor's Ray resource options."""
        options: dict[str, float | int] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            options["memory"] = self.memory
        return options

    def demand(self) -> dict[str, float]:
        """The shape as Ray resource names and amounts."""
        return {"CPU": self.cpus, "GPU": self.gpus, "memory": float(self.memory)}

    def label(self) -> str:
        parts = [f"cpu{self.cpus:g}"]
        if self.gpus:
            parts.append(f"gpu{self.gpus:g}")
        if self.memory:
            parts.append(f"mem{self.memory}")
        return "-".join(parts)


def shape_of(resources: Resources) -> Shape:
    """The pool a task's resources run in.

    A GPU task's actor reserves its GPUs (and memory) but no CPU unless the task asks for another
    number of CPUs than the default: GPU work is paced by its GPU, and reserving a CPU per
    fractional-GPU actor would let CPUs, not GPUs, bound how many share a device (Ray's own
    actors likewise hold no CPU while they run).
    """
    cpus = resources.cpu
    if resources.gpu > 0 and cpus == _DEFAULT_CPU:
        cpus = 0.0
    return Shape(cpus=cpus, gpus=resources.gpu, memory=resources.mem_bytes or 0)


class Capacity:
    """The cluster's resources and what this executor's actors reserve of them.

    Args:
        total: the cluster's resources (``ray.cluster_resources()``).
    """

    def __init__(self, total: Mapping[str, float]) -> None:
        self.total = {name: float(total.get(name, 0.0)) for name in ("CPU", "GPU", "memory")}
        self.used = {name: 0.0 for name in self.total}

    def resize(self, total: Mapping[str, float]) -> None:
        """The cluster's resources changed (nodes joined or left); what is used stays counted."""
        self.total = {name: float(total.get(name, 0.0)) for name in self.total}

    def fits(self, shape: Shape, freed: Iterable[Shape] = ()) -> bool:
        """Whether one more actor of ``shape`` fits, once the actors of ``freed`` are gone."""
        used = dict(self.used)
        for gone in freed:
            for name, amount in gone.demand().items():
                used[name] -= amount
        # a small tolerance: four 0.25 reservations must fill one GPU exactly
        return all(used[name] + amount <= self.total[name] + 1e-9 for name, amount in shape.demand().items())

    def ever_fits(self, shape: Shape) -> bool:
        """Whether an actor of ``shape`` fits in the cluster at all (nothing else running)."""
        return all(amount <= self.total[name] + 1e-9 for name, amount in shape.demand().items())

    def take(self, shape: Shape) -> None:
        for name, amount in shape.demand().items():
            self.used[name] += amount

    def give(self, shape: Shape) -> None:
        for name, amount in shape.demand().items():
            self.used[name] = max(0.0, self.used[name] - amount)
