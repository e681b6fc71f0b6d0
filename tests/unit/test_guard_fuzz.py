"""Hypothesis: no input makes the guard crash, not even into a fail-closed `guard.internal`."""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remed_daemon.guard import GuardVerdict, check_playbook
from remed_daemon.guard.paths import Effects
from remed_daemon.guard.shell import rules as guard_shell

pytestmark = pytest.mark.unit

FAST = settings(
    max_examples=int(os.environ.get("REMED_FUZZ_CRASH_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SHELL_ALPHABET = st.sampled_from(
    [*list("abcrm -/;|&$(){}[]<>'\"`\\\n*?~=!#.0123456789"), "rm", "-rf", "${IFS}", "{{", "}}"]
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=40), st.lists(SHELL_ALPHABET, max_size=30).map("".join),
)  # fmt: skip
keys = st.sampled_from(
    ["name", "hosts", "tasks", "become", "become_user", "vars", "shell", "command", "file",
     "copy", "loop", "when", "block", "rescue", "args", "path", "state", "src", "dest",
     "delegate_to", "environment", "action", "ansible.builtin.shell", "cmd", "argv", "x"]
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


def assert_verdict(v: GuardVerdict) -> None:
    assert isinstance(v, GuardVerdict)
    assert v.risk in ("low", "medium", "high")
    assert v.exit_code in (0, 1, 3)
    if not v.allowed:
        assert v.violations
    # The guard turns its own exceptions into a `guard.internal` refusal: safe, but a bug.
    assert not any(r.rule == "guard.internal" for r in v.violations), v


@FAST
@given(st.text(max_size=400))
def test_random_text_never_crashes(text: str) -> None:
    assert_verdict(check_playbook(text, "app,web"))


@FAST
@given(documents)
def test_random_yaml_structures_never_crash(doc: object) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    v = check_playbook(text, ["app"])
    assert_verdict(v)
    assert not any(r.rule == "guard.internal" for r in v.violations), v


@FAST
@given(st.lists(st.dictionaries(keys, documents, max_size=5), min_size=1, max_size=3))
def test_random_plays_never_crash(plays: list[dict[str, object]]) -> None:
    assert_verdict(check_playbook(yaml.safe_dump(plays), "app"))


@FAST
@given(st.lists(SHELL_ALPHABET, max_size=40).map("".join))
def test_random_shell_never_crashes(script: str) -> None:
    fx = Effects()
    guard_shell.check_script(script, fx, ["app"])
    assert all(0 <= f.level <= 3 for f in fx.findings)


@FAST
@given(st.lists(SHELL_ALPHABET, max_size=30).map("".join))
def test_shell_commands_in_playbooks_never_crash(script: str) -> None:
    doc = [{"hosts": "app", "tasks": [{"ansible.builtin.shell": script}]}]
    v = check_playbook(yaml.safe_dump(doc), "app")
    assert_verdict(v)
    assert not any(r.rule == "guard.internal" for r in v.violations), (script, v)
