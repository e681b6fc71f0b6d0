"""Redaction of secrets in host/model text, and extraction of one playbook from model output."""

from __future__ import annotations

import pytest
import yaml

from remed_daemon.agents.plan import CircuitBreaker, extract_playbook
from remed_daemon.agents.probe import requested_probes
from remed_daemon.agents.redact import redact, scrub
from remed_daemon.errors import PlannerUnavailable

pytestmark = pytest.mark.unit

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"key:\n{PEM}\nafter", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
        ("dsn postgresql://shop:shop-lab-pw@10.231.77.13/shop", "shop-lab-pw"),
        ("password=hunter2 next", "hunter2"),
        ('db_password: "s3cr3t value"', "s3cr3t value"),
        ("PGPASSWORD='pa55' psql", "pa55"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"),
        ("aws key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
        ("token ghp_0123456789abcdefghijklmnopqrstuvwxyz01", "ghp_0123456789abcdef"),
        ("api_key=sk-live-1234&x=1", "sk-live-1234"),
    ],
)
def test_redact_hides_secrets(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out or "REDACTED" in out


def test_redact_keeps_ordinary_evidence() -> None:
    line = "cart: connect() to 10.231.77.13:6379 failed (111: Connection refused)"
    assert redact(line) == line


def test_scrub_truncates() -> None:
    out = scrub("x" * 10_000, 500)
    assert len(out) <= 500 and "truncated" in out


PLAY = """\
- name: restart cart
  hosts: app
  become: true
  tasks:
    - name: restart
      ansible.builtin.command: supervisorctl restart cart
"""


@pytest.mark.parametrize(
    "completion",
    [
        f"```yaml\n{PLAY}```",
        f"Here is the fix:\n\n```yml\n{PLAY}```\nThis restarts cart.",
        f"Sure. The service crashed.\n{PLAY}\nThat should do it.",
        f"---\n{PLAY}",
        f"```yaml\nnot: a play list\n```\n```yaml\n{PLAY}```\n```yaml\n- hosts: db\n```",
        f"```\n{PLAY}```",
        f"```yaml\n{PLAY}",  # unterminated fence
    ],
)
def test_extract_one_playbook(completion: str) -> None:
    playbook = extract_playbook(completion)
    assert yaml.safe_load(playbook) == yaml.safe_load(PLAY)


@pytest.mark.parametrize(
    "completion", ["", "I cannot help", "```yaml\nkey: value\n```", "```bash\nrm -rf /\n```"]
)
def test_extract_nothing(completion: str) -> None:
    assert extract_playbook(completion) == ""


def test_probe_requests_are_names_only() -> None:
    text = "PROBE: recent_log\n# probe: top_cpu\nPROBE: cat /etc/shadow\nnot a probe"
    assert requested_probes(text) == ["recent_log", "top_cpu", "cat /etc/shadow"]


def test_circuit_breaker_opens_and_half_opens() -> None:
    now = [0.0]
    cb = CircuitBreaker(failures_to_open=2, open_s=10.0, clock=lambda: now[0])
    cb.failure()
    cb.check()
    cb.failure()
    with pytest.raises(PlannerUnavailable):
        cb.check()
    now[0] = 11.0
    cb.check()  # half-open: one call may try
    cb.success()
    assert cb.failures == 0
