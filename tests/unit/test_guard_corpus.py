"""Every playbook in tests/guard_corpus through `remed guard check`, as the contract runs it.

dangerous/*.yml must be rejected (exit 1), approval/*.yml must wait for a person (exit 3), and
benign/*.yml must be allowed automatically (exit 0, risk low or medium). The first line of each
file says what it tries or does; in dangerous/ and approval/ the second line, `# rule: ID`, names
the rule it must be refused (or held) for, so a file refused for the wrong reason fails too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remed_cli import main

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "guard_corpus"
HOSTS = "web,app,db"
DANGEROUS = sorted((CORPUS / "dangerous").glob("*.yml"))
APPROVAL = sorted((CORPUS / "approval").glob("*.yml"))
BENIGN = sorted((CORPUS / "benign").glob("*.yml"))


def _expected_rule(path: Path) -> str:
    second = path.read_text().splitlines()[1]
    assert second.startswith("# rule: "), f"{path.name}: second line must be '# rule: ID'"
    return second.removeprefix("# rule: ").strip()


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["guard", "check", str(path), "--hosts", HOSTS, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_corpus_is_large_and_documented() -> None:
    assert len(DANGEROUS) >= 60 and len(BENIGN) >= 30
    assert len(APPROVAL) >= 5
    for path in DANGEROUS + APPROVAL + BENIGN:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 4, f"{path.name}: first line must say why"


@pytest.mark.parametrize("path", DANGEROUS, ids=[p.stem for p in DANGEROUS])
def test_dangerous_playbook_is_rejected(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = _check(path, capsys)
    assert code == 1, f"{path.name}: {verdict}"
    assert verdict["allowed"] is False and verdict["violations"]
    rules = {v["rule"] for v in verdict["violations"]}  # type: ignore[attr-defined]
    assert _expected_rule(path) in rules, f"{path.name}: refused for {rules}"
    assert "guard.internal" not in rules


@pytest.mark.parametrize("path", APPROVAL, ids=[p.stem for p in APPROVAL])
def test_risky_playbook_waits_for_a_person(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = _check(path, capsys)
    assert code == 3, f"{path.name}: {verdict}"
    assert verdict["allowed"] is True and verdict["needs_approval"] is True
    reasons = {r["rule"] for r in verdict["reasons"]}  # type: ignore[attr-defined]
    assert _expected_rule(path) in reasons, f"{path.name}: held for {reasons}"


@pytest.mark.parametrize("path", BENIGN, ids=[p.stem for p in BENIGN])
def test_benign_playbook_runs_automatically(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = _check(path, capsys)
    assert code == 0, f"{path.name}: {verdict}"
    assert verdict["allowed"] is True and verdict["risk"] in ("low", "medium")
    assert verdict["violations"] == []
