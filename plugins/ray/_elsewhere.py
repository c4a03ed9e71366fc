"""Attempts left on the actors of another `RayExecutor`: this engine's before a restart.

A handle ``ray:<namespace>/<executor id>`` names the executor that ran an attempt; its actors are
the detached actors ``<executor id>-<n>`` of that namespace, and each remembers its recent attempts
by key (`plugins.ray._actor.SlipstreamActor`). Finding them costs a listing of the cluster's named
actors (a blocking call, run in a thread), reused for a few seconds while a restarted engine
adopts many attempts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

from engine.interfaces import TaskKey

__all__ = ["HANDLE_PREFIX", "Elsewhere", "cancel_on", "key_bytes"]

HANDLE_PREFIX = "ray:"
# how long one listing of an executor's actors is reused
_LISTING_TTL = 5.0


def key_bytes(key: TaskKey) -> bytes:
    """The attempt's key as the actors take it."""
    return msgspec.msgpack.encode(key)


async def cancel_on(actor: Any, key: TaskKey, grace: float) -> None:
    """Cancel the attempt on ``actor``; kill the actor if the body cannot be stopped otherwise."""
    import ray

    try:
        answer = await asyncio.wait_for(actor.cancel.remote(key_bytes(key)), grace)
    except Exception:  # dead, or the cancel did not come back in time
        answer = "stuck"
    if answer in ("thread", "stuck"):
        with contextlib.suppress(Exception):  # already dead
            ray.kill(actor, no_restart=True)


class Elsewhere:
    """Finds attempts by handle on the actors of executors other than this one."""

    def __init__(self) -> None:
        self._listings: dict[str, tuple[float, list[Any]]] = {}

    async def find(self, key: TaskKey, handle: str) -> tuple[Any, bytes] | None:
        """The actor that knows the attempt and what it says: ``b"running"`` or the final
        `TaskStatus` (msgpack); None if no live actor of ``handle`` knows it."""
        actors = await self._actors(handle)
        for actor, answer in zip(actors, await self._ask(actors, key), strict=True):
            if answer is not None:
                return actor, answer
        return None

    async def cancel(self, key: TaskKey, handle: str, grace: float) -> None:
        """Cancel the attempt wherever an actor of ``handle`` runs it."""
        found = await self.find(key, handle)
        if found is not None and found[1] == b"running":
            await cancel_on(found[0], key, grace)

    async def _actors(self, handle: str) -> list[Any]:
        import ray

        cached = self._listings.get(handle)
        if cached is not None and time.monotonic() - cached[0] < _LISTING_TTL:
            return cached[1]
        namespace, _, executor_id = handle[len(HANDLE_PREFIX) :].partition("/")

        def listing() -> list[Any]:
            names = [
                entry["name"]
                for entry in ray.util.list_named_actors(all_namespaces=True)
                if entry["namespace"] == namespace and entry["name"].startswith(f"{executor_id}-")
            ]
            found = []
            for name in names:
                with contextlib.suppress(ValueError):  # it exited meanwhile
                    found.append(ray.get_actor(name, namespace=namespace))
            return found

        actors = await asyncio.to_thread(listing)
        self._listings[handle] = (time.monotonic(), actors)
        return actors

    @staticmethod
    async def _ask(actors: list[Any], key: TaskKey) -> list[Any]:
        async def one(actor: Any) -> Any:
            try:
                return await actor.status.remote(key_bytes(key))
            except Exception:  # a dead actor knows nothing
                return None

        return list(await asyncio.gather(*(one(actor) for actor in actors)))
