"""The public facade: every name in ``engine.__all__`` resolves."""

from __future__ import annotations

import importlib

import pytest

import engine


@pytest.mark.parametrize("name", engine.__all__)
def test_public_name_resolves(name: str) -> None:
    value = getattr(importlib.import_module("engine"), name)
    assert value is not None
    assert name in dir(engine)


def test_all_is_sorted_and_unique() -> None:
    assert list(engine.__all__) == sorted(set(engine.__all__))


def test_the_scoped_catalog_view_is_public() -> None:
    """A scoped engine's ``catalog`` is a `ScopedCatalog` (docs/tenancy.md): users can name its type."""
    from engine._scoped_catalog import ScopedCatalog

    assert engine.ScopedCatalog is ScopedCatalog
