"""Config: defaults, TOML, REMED_* overrides, errors that say how to fix, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from remed_daemon.config import Secret, load, reloadable_changes
from remed_daemon.errors import ConfigError

pytestmark = pytest.mark.unit

TOKEN_ENV = {"REMED_HTTP_BEARER_TOKEN": "tok-123"}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "remed.toml"
    p.write_text(text)
    return p


def test_defaults_are_safe_shadow_mode() -> None:
    cfg = load(None, TOKEN_ENV)
    assert cfg.remediation.mode == "shadow"
    assert cfg.http.bearer_token.reveal() == "tok-123"
    assert cfg.journal_path.name == "journal.sqlite3"


def test_toml_and_env_override_with_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'state_dir = "/tmp/x"\n[http]\nport = 9999\nbearer_token = "file"\n'
        "[scheduler]\nmax_concurrency = 2\n[kafka]\nenabled = false\n",
    )
    env = {
        "REMED_HTTP_PORT": "0",
        "REMED_SCHEDULER_KILL_SWITCH": "yes",
        "REMED_HTTP_SERVICE_LABELS": "svc, job",
        "REMED_STATE_DIR": "/tmp/y",
    }
    cfg = load(path, env)
    assert cfg.http.port == 0
    assert cfg.http.bearer_token.reveal() == "file"
    assert cfg.scheduler.kill_switch is True
    assert cfg.scheduler.max_concurrency == 2
    assert cfg.http.service_labels == ("svc", "job")
    assert str(cfg.state_dir) == "/tmp/y"
    assert cfg.kafka.enabled is False


def test_secret_never_in_repr(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path,
            '[http]\nbearer_token = "hunter2"\nbasic_user = "u"\nbasic_password = "pw-secret"\n',
        ),
        {},
    )
    text = repr(cfg) + str(cfg.http)
    assert "hunter2" not in text and "pw-secret" not in text
    assert "***" in text
    assert Secret("a") == Secret("a") and not Secret("")


@pytest.mark.parametrize(
    ("toml", "env", "fragment"),
    [
        ("[http]\nprot = 1\n", TOKEN_ENV, "did you mean 'port'"),
        ("[http]\nport = 'x'\n", TOKEN_ENV, "http.port: expected an integer"),
        ("", {**TOKEN_ENV, "REMED_HTTP_PORT": "abc"}, "$REMED_HTTP_PORT: expected an integer"),
        ("[http]\nport = 70000\n", TOKEN_ENV, "0..65535"),
        ("", {}, "set http.bearer_token (or REMED_HTTP_BEARER_TOKEN)"),
        ("[remediation]\nmode = 'ansible'\n", TOKEN_ENV, "needs remediation.inventory"),
        ("[remediation]\nmode = 'yolo'\n", TOKEN_ENV, "is not one of 'shadow', 'ansible'"),
        # one engine: the old plain one's settings are planner = 'static' and mode = 'shadow'
        ("[remediation]\nengine = 'pipeline'\n", TOKEN_ENV, "planner = 'static'"),
        ("[remediation]\nengine = 'thinkremd'\n", TOKEN_ENV, "did you mean 'thinkremed'"),
        ("[remediation]\nstatic_playbook = 'nope.yml'\n", TOKEN_ENV, "is not a file"),
        ("[agents]\nverify_window_s = 1\nverify_stable_s = 2\n", TOKEN_ENV, "verify_stable_s"),
        ("[agents]\nmax_attempts = 21\n", TOKEN_ENV, "use at most 20"),
        ("[kafka]\nheartbeat_interval_ms = 9000\n", TOKEN_ENV, "at most a third"),
        ("[scheduler]\nmax_concurrency = 0\n", TOKEN_ENV, "scheduler.max_concurrency must be > 0"),
        ("[kafka\n", TOKEN_ENV, "is not valid TOML"),
        ("colour = 1\n", TOKEN_ENV, "unknown key 'colour'"),
    ],
)
def test_errors_name_the_key_and_the_fix(
    tmp_path: Path, toml: str, env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, toml), env)
    assert fragment in str(err.value)


def test_missing_file_says_where_the_example_is(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"remed\.toml\.example"):
        load(tmp_path / "nope.toml", TOKEN_ENV)


def test_reload_applies_scheduler_only(tmp_path: Path) -> None:
    old = load(None, TOKEN_ENV)
    new = load(None, {**TOKEN_ENV, "REMED_SCHEDULER_KILL_SWITCH": "1", "REMED_HTTP_PORT": "1"})
    applied, ignored = reloadable_changes(old, new)
    assert applied == ["scheduler.kill_switch"]
    assert ignored == ["http.port"]


def test_secret_from_file_variable(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    cfg = load(None, {"REMED_HTTP_BEARER_TOKEN_FILE": str(token)})
    assert cfg.http.bearer_token.reveal() == "from-file"
    with pytest.raises(ConfigError, match="cannot read the secret file"):
        load(None, {"REMED_HTTP_BEARER_TOKEN_FILE": str(tmp_path / "missing")})


def test_example_config_loads_and_matches_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / "systemd" / "remed.toml.example"
    cfg = load(example, TOKEN_ENV)
    assert cfg == load(None, TOKEN_ENV)
