"""The daemon's distribution: what its wheel holds (the daemon, its command and the schemas; not
the lab, the dev stack or the trainer), and the lint rule that keeps the daemon from importing
them (remed_daemon/ruff.toml)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# What the build reads, plus the packages that must stay out, so leaving them out is tested.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "remed_daemon", "remed_cli", "chaos",
           "remed_stack", "trainer")  # fmt: skip
BUILD_TIMEOUT_S = 120
RUFF_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel `pip wheel . --no-deps` builds, from a copy of the sources (the build writes
    build/ and *.egg-info beside them, which must not race other runs in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(src)],
        check=True, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    (built,) = out.glob("remed-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_the_daemon_its_command_and_the_schemas(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"remed_daemon", "remed_cli"}, tops
    for kind in ("diagnosis-report", "outcome", "feedback"):
        assert f"remed_daemon/schemas/{kind}.schema.json" in names
    assert "remed_daemon/guard/shell/__init__.py" in names
    assert "remed_cli/__init__.py" in names
    assert not [n for n in names if n.startswith(("chaos/", "remed_stack/", "trainer/"))]
    assert not [n for n in names if "/examples/" in n or "__pycache__" in n]


def test_the_wheel_declares_the_remed_command_and_no_torch(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert parser["console_scripts"]["remed"] == "remed_cli:main"
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.split(":", 1)[1].strip()
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if r.startswith(("torch", "transformers", "matplotlib"))], base
    assert any(r.startswith("numpy") for r in base) and any(r.startswith("protobuf") for r in base)


@pytest.mark.parametrize(
    "line",
    [
        "import chaos",
        "from chaos.lab import topology",
        "import remed_stack.paths",
        "from trainer import sft",
        "def f() -> None:\n    from remed_stack.triton import Triton\n    print(Triton)",
    ],
)
def test_the_daemon_may_not_import_the_lab_the_stack_or_the_trainer(line: str) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    code = f"{line}\n"
    inside = _ruff(ruff, "remed_daemon/agents/boundary_probe.py", code)
    assert inside.returncode == 1 and "TID251" in inside.stdout, inside.stdout + inside.stderr
    # The same line is fine where the lab, the stack and the CLI live.
    for outside in ("remed_cli/boundary_probe.py", "chaos/boundary_probe.py"):
        ok = _ruff(ruff, outside, code)
        assert "TID251" not in ok.stdout, ok.stdout


def test_the_daemon_keeps_the_wait_for_ban() -> None:
    """remed_daemon/ruff.toml replaces the banned-api table it extends; the repository's ban on
    asyncio.wait_for must still hold inside the daemon."""
    ruff = Path(sys.executable).with_name("ruff")
    code = "import asyncio\n\n\nasync def f() -> None:\n    await asyncio.wait_for(g(), 1)\n"
    result = _ruff(ruff, "remed_daemon/boundary_probe.py", code)
    assert "asyncio.wait_for" in result.stdout, result.stdout + result.stderr


def _ruff(ruff: Path, filename: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ruff), "check", "--no-cache", "--select", "TID251", "--output-format", "concise",
         "--stdin-filename", filename, "-"],
        input=code, capture_output=True, text=True, cwd=ROOT, timeout=RUFF_TIMEOUT_S,
    )  # fmt: skip
