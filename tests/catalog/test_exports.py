"""The catalog facade: ``catalog.__all__`` is exactly its public names, and each resolves."""

from __future__ import annotations

import catalog


def test_all_lists_the_public_names() -> None:
    helpers = ("annotations", "TYPE_CHECKING", "Any")
    public = {name for name in vars(catalog) if not name.startswith("_") and name not in helpers}
    public.add("PostgresCatalog")  # lazy: loaded by the module's __getattr__
    assert set(catalog.__all__) == public
    assert all(getattr(catalog, name) is not None for name in catalog.__all__)
    assert list(catalog.__all__) == sorted(catalog.__all__)


def test_importing_catalog_does_not_import_fsspec() -> None:
    import subprocess
    import sys

    code = "import sys, catalog; print('fsspec' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
