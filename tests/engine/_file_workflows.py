"""Workflows of the File/Dir tests; a real module, so that process workers and Ray actors import it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import stat
import tempfile

from engine import Dir, File, map_task, task, workflow


@task
def produce(text: str, scratch: str) -> File:
    os.makedirs(scratch, exist_ok=True)
    path = os.path.join(scratch, "out.txt")
    with open(path, "w") as handle:
        handle.write(text)
    return File(path)


@task
def wipe(scratch: str, after: File) -> bool:
    """Removes the producer's directory: what the consumer reads must come from the blob store."""
    existed = os.path.isdir(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    return existed


@task
def consume(f: File, wiped: bool) -> list[str]:
    assert wiped
    with f.open("r") as handle:
        return [handle.read(), f.path, f.name]


@workflow
def hand_over(text: str, scratch: str) -> list[str]:
    f = produce(text=text, scratch=scratch)
    return consume(f=f, wiped=wipe(scratch=scratch, after=f))


@dataclasses.dataclass
class Bundle:
    dirs: list[Dir]
    by_name: dict[str, File]


@task
def make_tree(root: str) -> Bundle:
    tree = os.path.join(root, "tree")
    os.makedirs(os.path.join(tree, "a", "b"), exist_ok=True)
    os.makedirs(os.path.join(tree, "empty-is-not-kept"), exist_ok=True)
    files = {"top.txt": (b"top", 0o644), "a/run.sh": (b"#!/bin/sh\necho hi\n", 0o755), "a/b/secret": (b"s", 0o600)}
    for relative, (data, mode) in files.items():
        path = os.path.join(tree, *relative.split("/"))
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
    single = os.path.join(root, "single.bin")
    with open(single, "wb") as handle:
        handle.write(b"\x00\x01")
    return Bundle(dirs=[Dir(tree)], by_name={"single": File(single)})


@task
def list_tree(bundle: Bundle, wiped: bool) -> list[list[str]]:
    assert wiped
    [tree] = bundle.dirs
    rows = []
    for f in tree.files():
        relative = os.path.relpath(f.path, tree.path)
        with f.open() as handle:
            data = handle.read().decode()
        rows.append([relative, oct(stat.S_IMODE(os.stat(f.path).st_mode)), data])
    rows.sort()
    with bundle.by_name["single"].open() as handle:
        rows.append(["single", "", handle.read().hex()])
    return rows


@task
def wipe_tree(root: str, after: Bundle) -> bool:
    shutil.rmtree(root)
    return True


@workflow
def tree_round_trip(root: str) -> list[list[str]]:
    bundle = make_tree(root=root)
    return list_tree(bundle=bundle, wiped=wipe_tree(root=root, after=bundle))


@task(cache=True, cache_version="1")
def digest(f: File) -> str:
    side_effects = os.environ.get("SLIPSTREAM_TEST_SIDE_EFFECTS")
    if side_effects:
        with open(os.path.join(side_effects, "digest.log"), "a") as log:
            log.write(f"{f.name}\n")
    with f.open() as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@workflow
def checksum(f: File) -> str:
    return digest(f=f)


@task(retries=2)
def vanishing(path: str) -> File:
    return File(path)


@workflow
def returns_missing(path: str) -> File:
    return vanishing(path=path)


@task
def passthrough(f: File) -> File:
    return f


@workflow
def echo_file(f: File) -> File:
    return passthrough(f=f)


@task
def size_of(f: File) -> int:
    return os.path.getsize(f.path)


@workflow
def sizes(files: list[File]) -> list[int]:
    return map_task(size_of)(f=files)


DEFAULT_INPUT = os.path.join(tempfile.gettempdir(), f"slipstream-test-default-{os.getuid()}.txt")


@task
def read_text(f: File) -> str:
    with f.open("r") as handle:
        return handle.read()


@workflow
def with_default(f: File = File(DEFAULT_INPUT)) -> str:
    return read_text(f=f)


@task
def write_n(scratch: str, n: int) -> File:
    os.makedirs(scratch, exist_ok=True)
    path = os.path.join(scratch, f"{n}.txt")
    with open(path, "w") as handle:
        handle.write("x" * n)
    return File(path)


@task
def wipe_all(scratch: str, after: list[File]) -> bool:
    shutil.rmtree(scratch)
    return True


@task
def total(files: list[File], wiped: bool) -> int:
    assert wiped
    return sum(os.path.getsize(f.path) for f in files)


@workflow
def map_writes(scratch: str, ns: list[int]) -> int:
    files = map_task(functools.partial(write_n, scratch=scratch))(n=ns)
    return total(files=files, wiped=wipe_all(scratch=scratch, after=files))
