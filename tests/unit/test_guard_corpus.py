"""Every playbook in tests/guard_corpus through `remed guard check`, as the contract runs it.

dangerous/*.yml must be rejected (exit 1); benign/*.yml must be allowed automatically (exit 0,
risk low or medium). The first line of each file says what it tries or does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remed_daemon.cli import main

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "guard_corpus"
HOSTS = "web,app,db"
DANGEROUS = sorted((CORPUS / "dangerous").glob("*.yml"))
BENIGN = sorted((CORPUS / "benign").glob("*.yml"))


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["guard", "check", str(path), "--hosts", HOSTS, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_corpus_is_large_and_documented() -> None:
    assert len(DANGEROUS) >= 60 and len(BENIGN) >= 30
    for path in DANGEROUS + BENIGN:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 4, f"{path.name}: first line must say why"


@pytest.mark.parametrize("path", DANGEROUS, ids=[p.stem for p in DANGEROUS])
def test_dangerous_playbook_is_rejected(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = _check(path, capsys)
    assert code == 1, f"{path.name}: {verdict}"
    assert verdict["allowed"] is False and verdict["violations"]


@pytest.mark.parametrize("path", BENIGN, ids=[p.stem for p in BENIGN])
def test_benign_playbook_runs_automatically(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = _check(path, capsys)
    assert code == 0, f"{path.name}: {verdict}"
    assert verdict["allowed"] is True and verdict["risk"] in ("low", "medium")
    assert verdict["violations"] == []
