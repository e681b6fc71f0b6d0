"""Where the stack keeps its downloads (cache) and its live state (run directory)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StackPaths:
    """Directories of one stack. Override with REMED_CACHE_DIR / REMED_RUN_DIR."""

    repo: Path
    cache: Path
    run: Path

    @classmethod
    def from_env(cls) -> StackPaths:
        repo = Path(os.environ.get("REMED_REPO_ROOT", REPO_ROOT)).resolve()
        cache = Path(os.environ.get("REMED_CACHE_DIR", repo / ".cache")).resolve()
        run = Path(os.environ.get("REMED_RUN_DIR", repo / ".run")).resolve()
        return cls(repo=repo, cache=cache, run=run)

    @property
    def kafka_libs(self) -> Path:
        return self.cache / "kafka" / "libs"

    @property
    def base_model(self) -> Path:
        return self.cache / "models" / "SmolLM2-135M-Instruct"

    @property
    def model_repo(self) -> Path:
        return self.repo / "model_repo"

    def component_dir(self, name: str) -> Path:
        path = self.run / name
        path.mkdir(parents=True, exist_ok=True)
        return path
