"""A private copy of the remed_planner model repository with its own Triton, for tests that
add version directories (never the shared stack's)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from remed_daemon.model_versions import ModelVersions
from remed_stack.paths import REPO_ROOT, StackPaths
from remed_stack.triton import MODEL_NAME, Triton

SOURCE = REPO_ROOT / "model_repo" / MODEL_NAME
BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this version is broken on purpose")
"""


def add_version(model_dir: Path, version: int, broken: bool = False) -> None:
    target = model_dir / str(version)
    target.mkdir()
    if broken:
        (target / "model.py").write_text(BROKEN_MODEL)
        return
    for src in (SOURCE / "1").glob("*.py"):
        shutil.copy2(src, target / src.name)


@contextmanager
def own_triton(root: Path) -> Iterator[tuple[Triton, ModelVersions]]:
    """Triton on `root`'s copy of the repository serving version 1; stopped on exit."""
    model_dir = root / "repo" / "model_repo" / MODEL_NAME
    model_dir.mkdir(parents=True)
    shutil.copy2(SOURCE / "config.pbtxt", model_dir / "config.pbtxt")
    for extra in SOURCE.iterdir():  # shared sources beside the versions (e.g. native/)
        if extra.is_dir() and not extra.name.isdigit() and extra.name != "__pycache__":
            shutil.copytree(extra, model_dir / extra.name)
    add_version(model_dir, 1)
    stack = StackPaths.from_env()
    triton = Triton(StackPaths(repo=root / "repo", cache=stack.cache, run=root / "run"))
    triton.up()
    try:
        yield triton, ModelVersions(triton.http_url, model_dir, triton.dir / "model_versions.json")
    finally:
        triton.down()
