"""The umbrella `remed` command (remed_cli): `--version`, the commands it dispatches, and what it
says where the lab or the dev stack is not installed (the daemon's wheel alone)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

import remed_cli

pytestmark = pytest.mark.unit


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        remed_cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"remed {metadata.version('remed')}"


def test_every_command_of_the_contract_is_there() -> None:
    parser = remed_cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) >= {  # type: ignore[arg-type]
        "serve", "approve", "reject", "config", "model", "guard", "bench", "stack",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "hidden", "what"),
    [
        (["bench", "--suite", "easy", "--remediator", "oracle", "--out", "x"], "chaos", "chaos"),
        (["stack", "status"], "remed_stack", "dev stack"),
    ],
)
def test_lab_commands_without_the_lab_say_where_it_lives(
    argv: list[str], hidden: str, what: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _hide(monkeypatch, hidden)
    assert remed_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert what in err and "repository checkout" in err, err


def test_model_without_a_url_outside_the_checkout_asks_for_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide(monkeypatch, "remed_stack")
    assert remed_cli.main(["model", "status"]) == 2
    assert "pass --url" in capsys.readouterr().err


def test_model_takes_triton_and_its_history_from_the_daemon_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--config`: remediation.triton_url and <state_dir>/model_versions.json; nothing of the dev
    stack (hidden here) is needed. The port is closed, so status fails saying where it asked."""
    _hide(monkeypatch, "remed_stack")
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[kafka]\nenabled = false\n'
        '[http]\nbearer_token = "t"\n[remediation]\ntriton_url = "127.0.0.1:9"\n'
    )
    assert remed_cli.main(["model", "status", "--config", str(cfg)]) == 1
    assert "cannot reach Triton at http://127.0.0.1:9" in capsys.readouterr().err
    # Without a history file, load refuses before asking Triton anything.
    assert remed_cli.main(["model", "load", "2", "--url", "127.0.0.1:9"]) == 1
    assert "without a version history file" in capsys.readouterr().err


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make `package` (and its submodules) unimportable, as in a daemon-only install."""
    for name in list(sys.modules):
        if name == package or name.startswith(package + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)
