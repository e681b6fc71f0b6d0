"""Compile planner_kernels.c into a shared library under the cache, keyed by the source's hash.

`make native` (part of `make setup`) runs this; remed_planner's model also calls `ensure_built`
when it loads and the library for the current source is missing. A source edit changes the
hash, so the next build or load compiles the new source; old builds are left for `make clean`.

    python model_repo/remed_planner/native/build.py [--cache-dir DIR]

prints the library's path. Needs gcc with AVX2/FMA/F16C support (build-essential).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "planner_kernels.c"
CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-pthread", "-fPIC", "-shared", "-std=gnu11")
COMPILER_ENV = "CC"
BUILD_TIMEOUT_S = 120


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled; the message says what is missing."""


def default_cache_dir() -> Path:
    """`$REMED_CACHE_DIR`, else `<repo>/.cache` (as remed_stack.paths.StackPaths does)."""
    env = os.environ.get("REMED_CACHE_DIR", "").strip()
    repo = SOURCE.parents[3]  # <repo>/model_repo/remed_planner/native/planner_kernels.c
    return Path(env).resolve() if env else repo / ".cache"


def library_path(cache_dir: Path | None = None) -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    return (cache_dir or default_cache_dir()) / "native" / f"remed_planner_kernels-{digest}.so"


def ensure_built(cache_dir: Path | None = None) -> Path:
    """The library for the current source, compiling it first when it is not there."""
    out = library_path(cache_dir)
    if out.is_file():
        return out
    compiler = os.environ.get(COMPILER_ENV) or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise NativeBuildError(
            "no C compiler found to build the planner kernels: install gcc "
            "(scripts/setup-debian.sh installs build-essential) or set $CC"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name and rename, so a concurrent loader never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=out.stem, suffix=".so.tmp", dir=out.parent)
    os.close(fd)
    cmd = [compiler, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
        if proc.returncode != 0:
            raise NativeBuildError(
                f"compiling the planner kernels failed ({' '.join(cmd)}):\n{proc.stderr.strip()}"
            )
        os.chmod(tmp, 0o755)  # mkstemp made it private to this user
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: .cache")
    args = parser.parse_args(argv)
    try:
        print(ensure_built(args.cache_dir))
    except NativeBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
