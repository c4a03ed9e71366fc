"""The ``ray`` executor: task attempts on pools of warm Ray actors (DESIGN section 7).

Importing this package does not import Ray; `RayExecutor.start` does.
"""

from __future__ import annotations

from plugins.ray._executor import RayExecutor, ray_available
from plugins.ray._shape import Shape, shape_of

__all__ = ["RayExecutor", "Shape", "ray_available", "shape_of"]
