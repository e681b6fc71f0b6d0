"""The operator commands' pure parts: `remed config check` prints every effective value with
its origin and secrets masked; `remed --version`; the text views of incidents, a shown
incident and tail events (the daemon side is tests/integration/test_operator_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import remed_cli as cli
from remed_cli import operator
from remed_cli.config_view import effective
from remed_daemon.config import load

pytestmark = pytest.mark.unit


def test_config_check_prints_effective_values_masking_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "approval"
    secret.write_text("approve-me-secret\n")
    monkeypatch.setenv("REMED_AGENTS_APPROVAL_TOKEN_FILE", str(secret))
    monkeypatch.setenv("REMED_SCHEDULER_MAX_CONCURRENCY", "2")
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path}"\n[kafka]\nenabled = false\n'
        '[http]\nbearer_token = "hook-secret-value"\nport = 9200\n'
    )
    assert cli.main(["config", "check", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    values = doc["effective"]
    assert values["http.bearer_token"] == {"value": "***", "from": "file"}
    assert values["http.port"] == {"value": 9200, "from": "file"}
    assert values["agents.approval_token"] == {
        "value": "***", "from": "$REMED_AGENTS_APPROVAL_TOKEN_FILE"
    }  # fmt: skip
    assert values["scheduler.max_concurrency"] == {
        "value": 2, "from": "$REMED_SCHEDULER_MAX_CONCURRENCY"
    }  # fmt: skip
    assert values["remediation.mode"] == {"value": "shadow", "from": "default"}
    assert values["http.basic_password"]["value"] == ""  # unset secrets show as empty
    assert values["state_dir"] == {"value": str(tmp_path), "from": "file"}
    assert cli.main(["config", "check", str(cfg)]) == 0
    out, err = capsys.readouterr()
    for secret_text in ("hook-secret-value", "approve-me-secret"):
        assert secret_text not in out + err + json.dumps(doc)
    assert "http.bearer_token" in out and "= '***'   (file)" in out
    assert "remediation.mode" in out and "'shadow'" in out


def test_every_key_of_the_config_is_shown(tmp_path: Path) -> None:
    cfg = load(None, {"REMED_HTTP_BEARER_TOKEN": "x"})
    values = effective(cfg, None, {"REMED_HTTP_BEARER_TOKEN": "x"})
    assert values["http.bearer_token"]["from"] == "$REMED_HTTP_BEARER_TOKEN"
    assert {"kafka.bootstrap", "agents.max_attempts", "telemetry.log_level"} <= set(values)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("remed ")


def test_operator_commands_are_in_the_table() -> None:
    parser = cli.build_parser()
    for argv in (["incidents", "--json"], ["show", "abc"], ["tail", "--json"], ["approvals"]):
        assert callable(parser.parse_args(argv).func)


def test_text_views() -> None:
    inc = {
        "id": "0123456789abcdef-rest", "target": "cart@app", "state": "recovered",
        "category": "service-down", "attempts": 1, "created_at": "2026-01-01T00:00:00Z",
        "time_to_recover_s": 12.25, "reason": "verified after attempt 1",
    }  # fmt: skip
    table = operator.format_incidents([inc])
    assert "01234567  cart@app" in table and "12.2s" in table and "service-down" in table
    assert operator.format_incidents([]) == "no incidents"
    event = {"at": "2026-01-01T00:00:01.5Z", "incident_id": inc["id"], "target": "cart@app",
             "from": None, "to": "received", "reason": "admitted"}  # fmt: skip
    assert "(admit) -> received  admitted" in operator.format_event(event)
    attempt = {
        "attempt": 1, "playbook": "- hosts: app\n", "guard": {"allowed": True, "risk": "low",
        "needs_approval": False, "violations": []},
        "tasks": [{"host": "app", "task": "start cart", "changed": True, "failed": False,
                   "unreachable": False, "rc": 0, "duration_ms": 120.0}],
        "verification": {"passed": True, "checks": [{"name": "health", "passed": True,
                                                     "detail": "200"}]},
    }  # fmt: skip
    text = operator.format_attempt(attempt)
    assert "attempt 1: guard allowed, risk low" in text
    assert "app    changed" in text and "start cart rc=0" in text
    assert "verification: passed" in text and "ok   health: 200" in text
