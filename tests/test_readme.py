"""The README's and the tutorial's code runs as written, and their links stay inside the repository.

Each program runs in a subprocess, in a temporary directory, with ``SLIPSTREAM_STATE_DIR`` (and
``HOME``) pointing there, so nothing touches the user's ``~/.slipstream``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TUTORIAL = ROOT / "docs" / "tutorial.md"

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of a markdown file, in order."""
    return _PYTHON_BLOCK.findall(path.read_text(encoding="utf-8"))


def block_with(blocks: list[str], *fragments: str) -> str:
    """The one block that holds every fragment (the test says which block it means by its content,
    so that sections added to the README around it do not move it)."""
    found = [block for block in blocks if all(fragment in block for fragment in fragments)]
    assert len(found) == 1, f"expected one python block with {fragments}, found {len(found)}"
    return found[0]


def run_python(directory: Path, script: str, source: str) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to ``directory/script`` and run it there with a state dir of its own."""
    (directory / script).write_text(source, encoding="utf-8")
    home = directory / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPSTREAM_")}
    env.update(SLIPSTREAM_STATE_DIR=str(directory / "state"), HOME=str(home))
    result = subprocess.run(
        [sys.executable, script], cwd=directory, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{result.stderr}"
    assert not (home / ".slipstream").exists(), "the snippet wrote to ~/.slipstream"
    return result


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    quickstart = block_with(python_blocks(README), "def pipeline(", "print(pipeline(")

    result = run_python(tmp_path, "quickstart.py", quickstart)

    assert result.stdout.splitlines() == ["1.5"]


def test_readme_embedding_snippet_runs(tmp_path: Path) -> None:
    blocks = python_blocks(README)
    quickstart = block_with(blocks, "def pipeline(", "print(pipeline(")
    embedding = block_with(blocks, "Engine.embedded()", "async def main(")

    # the embedding snippet launches the quickstart's `pipeline`: run it after those definitions
    result = run_python(tmp_path, "embedding.py", quickstart + "\n" + embedding)

    assert result.stdout.splitlines() == ["1.5", "1.5"]
    assert (tmp_path / "state" / "events.db").is_file()  # the embedded engine kept its log


def test_readme_fragments_are_python(tmp_path: Path) -> None:
    """Blocks that are fragments (they use names from the surrounding text) at least parse."""
    for block in python_blocks(README):
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


def test_tutorial_pipeline_and_embedding_run(tmp_path: Path) -> None:
    blocks = python_blocks(TUTORIAL)
    (tmp_path / "pipeline.py").write_text(block_with(blocks, "def pipeline("), encoding="utf-8")
    embed = block_with(blocks, "Engine.embedded()", "asyncio.run(main())")

    result = run_python(tmp_path, "embed.py", embed)

    # the tasks' prints are echoed on stdout too ("[<execution> <node>#<attempt>] scoring 1"), from
    # worker threads: look for the program's own lines, not at their positions
    lines = result.stdout.splitlines()
    assert "6.0" in lines
    assert "succeeded [('map_score', 'succeeded'), ('best', 'succeeded')]" in lines
    assert any(line.startswith("best 1 ") and "picking the best of 3 scores" in line for line in lines)


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_stay_in_the_repository(page: Path) -> None:
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name} links to {target}, outside the repository"
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


def test_docs_build_strict(tmp_path: Path) -> None:
    """The mkdocs site builds with warnings as errors (a broken link, a docstring mkdocstrings
    cannot read, an unknown anchor), as CI builds it."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
