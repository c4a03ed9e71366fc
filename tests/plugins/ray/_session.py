"""One in-process Ray for a test module: two logical CPUs and two logical GPUs (no hardware needed).

Ray takes seconds to start, so a module starts it once (`ensure_ray`, from its first test) and
stops it at its end (`ray_session`, a module fixture); every `RayExecutor` of the module reuses it.
"""

from __future__ import annotations

from collections.abc import Iterator

CPUS = 2
GPUS = 2


def ensure_ray() -> None:
    """Start the module's Ray unless it runs."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=CPUS, num_gpus=GPUS, include_dashboard=False, log_to_driver=False, namespace="slipstream")


def ray_session() -> Iterator[None]:
    """Body of a module fixture: Ray is stopped once the module's tests are done."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
