"""A probe: tasks, in any thread or process of this machine, tell the test what they reached.

The test side (`Probe`) is a TCP server on 127.0.0.1 in the test's event loop; the task side
(`tell`, `hold` and their async twins) connects to its address, which travels to the task as an
input. Every call is a round trip, so once a task's `tell` returns the test has recorded it, and
the test waits on notifications (with a guard timeout), never on time passing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

WAIT = 60.0  # seconds; a guard against hangs, never a wait for time to pass


# --- task side ---------------------------------------------------------------------------------


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def tell(address: str, name: str) -> None:
    """Record ``name`` at the probe; returns once it is recorded."""
    with socket.create_connection(_split(address), timeout=WAIT) as conn:
        conn.sendall(f"{name}\n".encode())
        conn.recv(16)


def hold(address: str, name: str) -> None:
    """Record ``name`` and block until the test lets it go, or the probe closes."""
    with socket.create_connection(_split(address), timeout=WAIT) as conn:
        conn.settimeout(None)
        conn.sendall(f"{name} hold\n".encode())
        conn.recv(16)


async def tell_async(address: str, name: str) -> None:
    """`tell`, for async tasks."""
    await _exchange(address, f"{name}\n")


async def hold_async(address: str, name: str) -> None:
    """`hold`, for async tasks."""
    await _exchange(address, f"{name} hold\n")


async def _exchange(address: str, line: str) -> None:
    reader, writer = await asyncio.open_connection(*_split(address))
    try:
        writer.write(line.encode())
        await writer.drain()
        await reader.readline()
    finally:
        writer.close()


# --- test side ---------------------------------------------------------------------------------


class Probe:
    """The server tasks tell. ``seen`` lists every name told, in order of arrival."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.address = ""
        self._held: dict[str, asyncio.StreamWriter] = {}
        self._gone: set[str] = set()  # holders whose connection closed
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"

    async def close(self) -> None:
        for writer in self._held.values():
            writer.close()
        self._held.clear()
        if self._server is not None:
            self._server.close()

    async def reached(self, name: str) -> None:
        """Wait until a task told ``name``."""
        await self._until(lambda: name in self.seen)

    async def gone(self, name: str) -> None:
        """Wait until the task holding at ``name`` dropped its connection (returned or died)."""
        await self._until(lambda: name in self._gone)

    def let_go(self, name: str) -> None:
        """Let the task holding at ``name`` continue."""
        self._held.pop(name).write(b"go\n")

    async def _until(self, condition: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), WAIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode().strip()
            name, _, mode = line.partition(" ")
            self.seen.append(name)
            if mode != "hold":
                writer.write(b"ok\n")
                await writer.drain()
                return
            self._held[name] = writer
            self._changed.set()
            with contextlib.suppress(ConnectionError, OSError):
                await reader.read()  # until the task side closes: it went on, or its process died
            self._gone.add(name)
        except (ConnectionError, OSError):
            pass
        finally:
            self._changed.set()
            writer.close()
