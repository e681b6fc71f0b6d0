"""Compile planner_kernels.c into a shared library under the cache, keyed by the source's hash.

`make native` (part of `make setup`) runs this; remed_planner's model also calls `ensure_built`
when it loads and the library for the current source is missing. A source edit changes the
hash, so the next build or load compiles the new source; old builds are left for `make clean`.

The instruction set is this CPU's best of ISAS: every build needs AVX2/FMA/F16C; where the
CPU has VNNI (one `vpdpbusd` does what `maddubs` + `madd` + adds do) the integer dots use it.
Both builds compute the same integer sums, so their results are identical; only speed differs.
`$REMED_PLANNER_ISA` (or `--isa`) picks one by name, for A/B runs and tests.

    python model_repo/remed_planner/native/build.py [--cache-dir DIR] [--isa NAME]

prints the library's path. Needs gcc 11+ (build-essential).
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
from typing import NamedTuple

SOURCE = Path(__file__).resolve().parent / "planner_kernels.c"
CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-pthread", "-fPIC", "-shared", "-std=gnu11")
COMPILER_ENV = "CC"
ISA_ENV = "REMED_PLANNER_ISA"
BUILD_TIMEOUT_S = 120
CPUINFO = Path("/proc/cpuinfo")


# A NamedTuple, not a dataclass: model.py loads this file without registering it as a module,
# and dataclasses look their module up in sys.modules.
class Isa(NamedTuple):
    name: str
    cpu_flags: frozenset[str]  # as /proc/cpuinfo spells them
    cflags: tuple[str, ...]


# Best first. With AVX-512 the dots use 512-bit vectors (a whole 16-row group per vector) and
# the 256-bit code gets 32 registers; the compiler's own vectorisation stays at 256 bits.
ISAS = (
    Isa(
        "avx512vnni",
        frozenset({"avx2", "fma", "f16c", "avx512f", "avx512vl", "avx512_vnni"}),
        ("-mavx512f", "-mavx512vl", "-mavx512vnni", "-mprefer-vector-width=256"),
    ),
    Isa("avxvnni", frozenset({"avx2", "fma", "f16c", "avx_vnni"}), ("-mavxvnni",)),
    Isa("avx2", frozenset({"avx2", "fma", "f16c"}), ()),
)


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled; the message says what is missing."""


def default_cache_dir() -> Path:
    """`$REMED_CACHE_DIR`, else `<repo>/.cache` (as remed_stack.paths.StackPaths does)."""
    env = os.environ.get("REMED_CACHE_DIR", "").strip()
    repo = SOURCE.parents[3]  # <repo>/model_repo/remed_planner/native/planner_kernels.c
    return Path(env).resolve() if env else repo / ".cache"


def cpu_flags() -> frozenset[str]:
    for line in CPUINFO.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def supported_isas(flags: frozenset[str] | None = None) -> list[str]:
    """Names of the ISAS this CPU runs, best first."""
    flags = cpu_flags() if flags is None else flags
    return [isa.name for isa in ISAS if isa.cpu_flags <= flags]


def select_isa(name: str | None = None, flags: frozenset[str] | None = None) -> Isa:
    """`name`, else $REMED_PLANNER_ISA, else the best this CPU runs."""
    name = name or os.environ.get(ISA_ENV, "").strip() or None
    runnable = supported_isas(flags)
    if name is None:
        if not runnable:
            raise NativeBuildError(
                "this CPU lacks AVX2/FMA/F16C, which the planner kernels need; "
                "serve weights fp32 instead (config.pbtxt parameter `weights`)"
            )
        name = runnable[0]
    known = {isa.name: isa for isa in ISAS}
    if name not in known:
        raise NativeBuildError(f"unknown ISA {name!r} (from ${ISA_ENV}?): one of {list(known)}")
    if name not in runnable:
        raise NativeBuildError(f"this CPU cannot run the {name} build; it runs {runnable}")
    return known[name]


def library_path(cache_dir: Path | None = None, isa: Isa | None = None) -> Path:
    flags = CFLAGS + (isa or select_isa()).cflags
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:16]
    return (cache_dir or default_cache_dir()) / "native" / f"remed_planner_kernels-{digest}.so"


def ensure_built(cache_dir: Path | None = None, isa: str | None = None) -> Path:
    """The library for the current source and ISA, compiling it first when it is not there."""
    chosen = select_isa(isa)
    out = library_path(cache_dir, chosen)
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
    cmd = [compiler, *CFLAGS, *chosen.cflags, "-o", tmp, str(SOURCE), "-lm"]
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
    parser.add_argument(
        "--isa",
        choices=[isa.name for isa in ISAS],
        default=None,
        help=f"default: ${ISA_ENV}, else the best this CPU runs",
    )
    args = parser.parse_args(argv)
    try:
        print(ensure_built(args.cache_dir, args.isa))
    except NativeBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
