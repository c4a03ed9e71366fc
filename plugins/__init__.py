"""Backends behind engine interfaces: executors, event streams, agents, lineage (DESIGN section 8).

Heavy backends (ray, nats) must be imported lazily by whoever needs them, never from here.
"""

from __future__ import annotations

from plugins.local import LocalExecutor

__all__ = ["LocalExecutor"]
