"""``File`` and ``Dir``: typed references to paths, passed between tasks as small structs.

A ``File`` literal is the struct ``{"path": ...}``; the bytes are not copied. Tasks that run on other
machines need a shared path (a network file system or a mounted bucket).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any

import msgspec

__all__ = ["Dir", "File"]


class File(msgspec.Struct, frozen=True):
    """A file that a task reads or writes, referenced by its path.

    Attributes:
        path: the file's path (absolute paths travel best between workers).
    """

    path: str  # a str or os.PathLike at construction; always a str after

    def __post_init__(self) -> None:
        # accept ``pathlib.Path`` too, but always store (and encode) a plain string
        if not isinstance(self.path, str):
            msgspec.structs.force_setattr(self, "path", os.fspath(self.path))

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """Open the file, as the builtin ``open`` does.

        Args:
            mode: the ``open`` mode (binary read by default).
            **kwargs: passed on to ``open`` (``encoding`` ...).

        Returns:
            The open file object.
        """
        return open(self.path, mode, **kwargs)

    def exists(self) -> bool:
        """Whether the file exists.

        Returns:
            ``True`` if ``path`` is an existing file.
        """
        return os.path.isfile(self.path)

    def __fspath__(self) -> str:
        return self.path


class Dir(msgspec.Struct, frozen=True):
    """A directory that a task reads or writes, referenced by its path.

    Attributes:
        path: the directory's path.
    """

    path: str  # a str or os.PathLike at construction; always a str after

    def __post_init__(self) -> None:
        # accept ``pathlib.Path`` too, but always store (and encode) a plain string
        if not isinstance(self.path, str):
            msgspec.structs.force_setattr(self, "path", os.fspath(self.path))

    def files(self) -> Iterator[File]:
        """Walk the directory.

        Returns:
            An iterator of every file below the directory, in sorted order per level.
        """
        for root, dirs, names in os.walk(self.path):
            dirs.sort()
            for name in sorted(names):
                yield File(os.path.join(root, name))

    def __fspath__(self) -> str:
        return self.path
