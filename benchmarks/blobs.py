"""``python -m benchmarks blobs``: offload and read back a large value through `LocalBlobStore`.

``python -m benchmarks blobs [--mb 100] [--repeat 5] [--dir PATH]``

Every figure is MB/s (10^6 bytes) of one ``--mb`` value, median of ``--repeat`` rounds; the rounds
interleave the store and its baselines, all on the same disk (``--dir``, the system temp directory
by default), because this machine is shared and noisy. Each round stores a value not stored
before (its first bytes differ), so no put is a dedup hit unless it says so.

Store (the embedded default: ``fsync=True``, reads not re-hashed):
- ``put``: ``await store.put(value)``: hash, write a temporary file, fsync, rename;
- ``put_no_fsync``: the same with ``fsync=False``;
- ``put_stream``: the value in 1 MiB chunks through ``put_stream`` (fsync on);
- ``put_dedup``: putting a value already stored (hash and a stat);
- ``get``: ``await store.get(address)``; ``get_verified``: with ``verify=True`` (re-hash);
- ``open``: streaming read in 1 MiB chunks.
Baselines:
- ``copyfile``: ``shutil.copyfile`` of a file of the same size (page-cached source), no fsync;
- ``copyfile_fsync``: the same, then fsync of the copy (what a durable put must also pay);
- ``write_file`` / ``read_file``: ``Path.write_bytes`` / ``Path.read_bytes`` of the value;
- ``sha256``: ``hashlib.sha256(value)`` alone: a content-addressed put must hash every byte, so
  ``hash_then_write`` (the two one after the other, computed from their medians) is the floor of
  an unsynced put on one core.
Ratios are store rate / baseline rate (1.0: as fast as the plain file operation).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from catalog import LocalBlobStore

MB = 1_000_000
CHUNK = 1 << 20


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks blobs", description=__doc__)
    parser.add_argument("--mb", type=int, default=100, help="size of the value in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median reported)")
    parser.add_argument("--dir", default=None, help="where the store and the baseline files live")
    return parser.parse_args(argv)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _drain(chunks: Any) -> int:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
    return total


def _baseline_round(source: Path, data: bytes, directory: Path) -> dict[str, float]:
    """Seconds of each plain file operation on a value of the same size."""
    took: dict[str, float] = {}
    copy, written = directory / "copy.bin", directory / "written.bin"
    start = time.perf_counter()
    shutil.copyfile(source, copy)
    took["copyfile"] = time.perf_counter() - start
    copy.unlink()
    start = time.perf_counter()
    shutil.copyfile(source, copy)
    _fsync_path(copy)
    took["copyfile_fsync"] = time.perf_counter() - start
    copy.unlink()
    start = time.perf_counter()
    written.write_bytes(data)
    took["write_file"] = time.perf_counter() - start
    start = time.perf_counter()
    written.read_bytes()
    took["read_file"] = time.perf_counter() - start
    written.unlink()
    start = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    took["sha256"] = time.perf_counter() - start
    return took


async def _store_round(store: LocalBlobStore, scratch: LocalBlobStore, data: bytes) -> dict[str, float]:
    """Seconds of each store operation on ``data`` (a value not stored yet); leaves nothing stored."""
    took: dict[str, float] = {}
    start = time.perf_counter()
    address = await store.put(data)
    took["put"] = time.perf_counter() - start
    start = time.perf_counter()
    await store.put(data)
    took["put_dedup"] = time.perf_counter() - start
    start = time.perf_counter()
    await store.get(address)
    took["get"] = time.perf_counter() - start
    start = time.perf_counter()
    await store.get(address, verify=True)
    took["get_verified"] = time.perf_counter() - start
    start = time.perf_counter()
    await _drain(store.open(address, chunk_size=CHUNK))
    took["open"] = time.perf_counter() - start
    await store.delete(address)

    start = time.perf_counter()
    await scratch.put(data)
    took["put_no_fsync"] = time.perf_counter() - start
    await scratch.delete(address)

    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]  # made before the clock starts
    start = time.perf_counter()
    await store.put_stream(chunks)
    took["put_stream"] = time.perf_counter() - start
    await store.delete(address)
    return took


async def run_rounds(size: int, repeat: int, directory: Path) -> dict[str, list[float]]:
    """Seconds per round for each figure (store and baselines interleaved)."""
    store = LocalBlobStore(directory / "blobs")
    scratch = LocalBlobStore(directory / "blobs-no-fsync", fsync=False)
    await store.start()
    await scratch.start()
    value = bytearray(os.urandom(size))
    source = directory / "source.bin"
    await asyncio.to_thread(source.write_bytes, value)
    seconds: dict[str, list[float]] = {}
    for round_no in range(repeat):
        value[:8] = (round_no + 1).to_bytes(8, "big")  # a new value: its own hash, never a dedup hit
        data = bytes(value)
        # the baselines run on the loop's thread on purpose: nothing else runs meanwhile
        for took in (_baseline_round(source, data, directory), await _store_round(store, scratch, data)):
            for name, value_s in took.items():
                seconds.setdefault(name, []).append(value_s)
    await store.close()
    await scratch.close()
    return seconds


def summarise(size: int, seconds: dict[str, list[float]]) -> dict[str, Any]:
    """MB/s (median, best, worst) per figure, and the store's ratios to its baselines."""
    rates: dict[str, dict[str, float]] = {}
    for name, times in seconds.items():
        per_round = [size / MB / t for t in times if t > 0]
        rates[name] = {
            "median_mb_s": round(statistics.median(per_round), 1),
            "best_mb_s": round(max(per_round), 1),
            "worst_mb_s": round(min(per_round), 1),
        }

    hash_then_write = 1 / (1 / rates["sha256"]["median_mb_s"] + 1 / rates["write_file"]["median_mb_s"])
    rates["hash_then_write"] = {"median_mb_s": round(hash_then_write, 1)}

    def ratio(store_figure: str, baseline: str) -> float:
        return round(rates[store_figure]["median_mb_s"] / rates[baseline]["median_mb_s"], 3)

    return {
        "rates": rates,
        "ratios": {
            "put_vs_copyfile": ratio("put", "copyfile"),
            "put_vs_copyfile_fsync": ratio("put", "copyfile_fsync"),
            "put_no_fsync_vs_copyfile": ratio("put_no_fsync", "copyfile"),
            "put_no_fsync_vs_write_file": ratio("put_no_fsync", "write_file"),
            "put_no_fsync_vs_hash_then_write": ratio("put_no_fsync", "hash_then_write"),
            "put_stream_vs_copyfile_fsync": ratio("put_stream", "copyfile_fsync"),
            "get_vs_copyfile": ratio("get", "copyfile"),
            "get_vs_read_file": ratio("get", "read_file"),
            "get_verified_vs_read_file": ratio("get_verified", "read_file"),
            "open_vs_read_file": ratio("open", "read_file"),
        },
    }


async def main(argv: list[str]) -> dict[str, Any]:
    """Run the rounds in a scratch directory and return the figures (written to results/blobs.json)."""
    args = parse_args(argv)
    size = args.mb * MB
    base = Path(args.dir) if args.dir else None
    directory = Path(tempfile.mkdtemp(prefix="slipstream-blobs-", dir=base))
    try:
        seconds = await run_rounds(size, args.repeat, directory)
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)
    return {
        "parameters": {"value_mb": args.mb, "repeat": args.repeat, "chunk_bytes": CHUNK, "dir": str(directory)},
        **summarise(size, seconds),
        "seconds": {name: [round(t, 4) for t in times] for name, times in seconds.items()},
    }
