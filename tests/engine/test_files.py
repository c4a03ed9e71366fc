"""``File`` and ``Dir`` through the blob store: uploaded by the worker that returns them (or by
``Engine.launch``), materialised for the tasks that take them, hashed by content for the cache."""

from __future__ import annotations

import os
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from catalog import LocalBlobStore, SqliteCatalog
from engine import Dir, Engine, File, MissingFile, TaskFailed, to_literal
from engine._files import Materializer, upload_files
from engine.events import NodeCacheHit, NodeSucceeded
from engine.literals import literal_hash
from tests.engine import _file_workflows as wf

EXPECTED_TREE = [
    ["a/b/secret", "0o600", "s"],
    ["a/run.sh", "0o755", "#!/bin/sh\necho hi\n"],
    ["top.txt", "0o644", "top"],
    ["single", "", "0001"],
]


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _size(path: str) -> int:
    return os.path.getsize(path)


def _materialised_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    return {name for name in os.listdir(tmp) if name.startswith("slipstream-files-")}


async def _hand_over(engine: Engine, tmp_path: Path) -> None:
    before = _materialised_dirs()
    scratch = tmp_path / "producer"
    handle = await engine.launch(wf.hand_over, text="hello", scratch=str(scratch))
    text, path, name = await handle.outputs(timeout=60)
    assert text == "hello" and name == "out.txt"
    assert not scratch.exists(), "the producer's directory was removed before the consumer ran"
    assert os.path.basename(os.path.dirname(os.path.dirname(path))).startswith("slipstream-files-")
    assert not _exists(path), "the consumer's copy is removed after its attempt"
    assert _materialised_dirs() <= before
    history = await engine.history(handle.execution_id)
    [produced] = [e for e in history if isinstance(e, NodeSucceeded) and e.node_id == "produce"]
    literal = msgspec.msgpack.decode(produced.outputs["o0"])
    assert literal["path"] == "out.txt" and literal["blob"].startswith("sha256/"), "name and content, no path"
    assert engine.blobs is not None and await engine.blobs.get(literal["blob"]) == b"hello"


async def test_a_returned_file_travels_through_the_blob_store(eng: Engine, tmp_path: Path) -> None:
    await _hand_over(eng, tmp_path)


async def test_a_dir_with_nested_files_and_modes_round_trips_inside_containers(eng: Engine, tmp_path: Path) -> None:
    handle = await eng.launch(wf.tree_round_trip, root=str(tmp_path / "root"))
    assert await handle.outputs(timeout=60) == EXPECTED_TREE


async def test_with_process_workers(tmp_path: Path) -> None:
    async with Engine.embedded(tmp_path / "state", executor_options={"mode": "process"}, retry_delay=0.05) as eng:
        await _hand_over(eng, tmp_path)
        handle = await eng.launch(wf.tree_round_trip, root=str(tmp_path / "root"))
        assert await handle.outputs(timeout=60) == EXPECTED_TREE


async def test_a_launched_file_is_uploaded_and_an_output_file_is_downloaded(eng: Engine, tmp_path: Path) -> None:
    source = tmp_path / "input.csv"
    source.write_text("a,b\n1,2\n")
    handle = await eng.launch(wf.echo_file, f=File(source))
    source.unlink()  # the execution holds the content, not the path
    out = await handle.outputs(timeout=60)
    # the caller gets a file it can open: downloaded into a temporary directory of its own
    assert isinstance(out, File) and Path(out.path).name == "input.csv" and out.blob.startswith("sha256/")
    assert await anyio.Path(out.path).read_bytes() == b"a,b\n1,2\n"
    assert eng.blobs is not None and await eng.blobs.get(out.blob) == b"a,b\n1,2\n"
    plain = await eng.outputs(handle.execution_id, typed=False)  # plain values: the reference itself
    assert plain == {"path": "input.csv", "blob": out.blob}


async def test_a_missing_file_is_a_typed_error_naming_the_path(eng: Engine, tmp_path: Path) -> None:
    missing = str(tmp_path / "never-written.txt")
    handle = await eng.launch(wf.returns_missing, path=missing)
    with pytest.raises(TaskFailed) as failed:
        await handle.outputs(timeout=60)
    assert "MissingFile" in failed.value.message and missing in failed.value.message
    attempts = [e for e in await eng.history(handle.execution_id) if type(e).__name__ == "NodeFailed"]
    assert len(attempts) == 1 and not attempts[0].error.retryable, "a missing file is not retried"
    with pytest.raises(MissingFile, match=r"never-written\.txt"):
        await eng.launch(wf.checksum, f=File(missing))


async def test_the_cache_key_follows_the_content_not_the_path(
    make_engine: object, store_kind: str, tmp_path: Path, side_effects: Path, request: pytest.FixtureRequest
) -> None:
    if store_kind == "sqlite":
        catalog: object = SqliteCatalog(tmp_path / "catalog.db")
    else:
        from catalog import PostgresCatalog

        catalog = PostgresCatalog(
            request.getfixturevalue("postgres_database"), schema=request.getfixturevalue("postgres_schema")
        )
    first, second = tmp_path / "one" / "data.csv", tmp_path / "two" / "data.csv"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text("x,y\n")
    async with make_engine(catalog=catalog) as engine:  # type: ignore[operator]

        async def run(path: Path) -> tuple[str, int]:
            handle = await engine.launch(wf.checksum, f=File(path))
            out = await handle.outputs(timeout=60)
            history = await engine.history(handle.execution_id)
            return out, sum(isinstance(e, NodeCacheHit) for e in history)

        digest, hits = await run(first)
        assert hits == 0
        assert await run(second) == (digest, 1), "the same content from another path hits"
        first.write_text("x,y\n1,2\n")  # changed in place
        changed, hits = await run(first)
        assert changed != digest and hits == 0, "a file changed in place misses"
    assert (side_effects / "digest.log").read_text().splitlines() == ["data.csv", "data.csv"]


async def test_literals_hash_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    await store.start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for directory, text in (("a", "same"), ("b", "same")):
        (tmp_path / directory / "f.txt").write_text(text)
    one, two = [await upload_files(File(tmp_path / d / "f.txt"), store) for d in ("a", "b")]
    assert one == two and literal_hash(to_literal(one, File)) == literal_hash(to_literal(two, File))
    (tmp_path / "b" / "f.txt").write_text("other")
    three = await upload_files(File(tmp_path / "b" / "f.txt"), store)
    assert literal_hash(to_literal(three, File)) != literal_hash(to_literal(one, File))
    tree_a, tree_b = [await upload_files(Dir(tmp_path / d), store) for d in ("a", "b")]
    assert tree_a.blob != tree_b.blob and tree_a.name == "a"
    # a reference (a name and an address) stays one, whatever the working directory holds
    assert one.path == "f.txt"
    monkeypatch.chdir(tmp_path / "b")
    assert await upload_files(one, store) is one
    # nested in a dict and a tuple, only the files are replaced
    nested = await upload_files({"k": (1, File(tmp_path / "a" / "f.txt"))}, store)
    assert nested == {"k": (1, one)}
    materializer = Materializer(store)
    local = await materializer.materialize([tree_b])
    assert _read(os.path.join(local[0].path, "f.txt")) == "other"
    materializer.cleanup()
    assert not _exists(local[0].path)


def _big_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(size >> 20):
            handle.write(block)


async def test_a_200_mb_file_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    size = 200 << 20
    path = tmp_path / "big.bin"
    _big_file(path, size)
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    await store.start()
    tracemalloc.start()
    try:
        uploaded = await upload_files(File(path), store)
        materializer = Materializer(store)
        [local] = await materializer.materialize([uploaded])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _size(local.path) == size
    materializer.cleanup()
    # one read chunk (1 MiB) at a time, give or take the store's buffers: far below the file
    assert peak < 16 << 20, f"peak Python allocations {peak / 2**20:.1f} MiB while moving 200 MiB"


@pytest.fixture
def ray_module() -> Iterator[None]:
    pytest.importorskip("ray")
    from tests.plugins.ray._session import ray_session

    yield from ray_session()


async def test_on_ray_actors(ray_module: None, tmp_path: Path) -> None:
    from plugins.ray import RayExecutor
    from tests.plugins.ray._session import ensure_ray

    ensure_ray()
    async with Engine.embedded(tmp_path / "state", executors=[RayExecutor()], executor="ray", retry_delay=0.05) as eng:
        await _hand_over(eng, tmp_path)
        handle = await eng.launch(wf.tree_round_trip, root=str(tmp_path / "root"))
        assert await handle.outputs(timeout=120) == EXPECTED_TREE


def test_a_runtime_without_a_store_passes_paths(tmp_path: Path) -> None:
    """An executor used on its own (no engine, no blob store) hands over plain paths, as before."""
    from engine.interfaces import TaskKey, TaskRequest
    from engine.runtime import run_attempt

    source = tmp_path / "x.csv"
    source.write_text("1")
    task = wf.passthrough
    request = TaskRequest(key=TaskKey("e", "n", 1), task=task.ref, inputs={"f": to_literal(File(source), File)})
    status = run_attempt(request)
    assert status.phase == "succeeded", status.error
    assert msgspec.msgpack.decode(status.outputs["o0"]) == {"path": str(source)}


async def test_a_map_over_files_and_a_default_file_input(eng: Engine, tmp_path: Path) -> None:
    paths = []
    for size in (3, 0, 5):
        path = tmp_path / f"f{size}.bin"
        path.write_bytes(b"x" * size)
        paths.append(File(path))
    handle = await eng.launch(wf.sizes, files=paths)
    assert await handle.outputs(timeout=60) == [3, 0, 5]
    text = f"default of {tmp_path.name}"
    _write(wf.DEFAULT_INPUT, text)
    try:
        handle = await eng.launch(wf.with_default)
    finally:
        os.unlink(wf.DEFAULT_INPUT)  # launch uploaded it: the run needs the path no more
    assert await handle.outputs(timeout=60) == text


async def test_files_returned_by_map_elements(eng: Engine, tmp_path: Path) -> None:
    handle = await eng.launch(wf.map_writes, scratch=str(tmp_path / "elements"), ns=[1, 2, 3, 4])
    assert await handle.outputs(timeout=60) == 10
