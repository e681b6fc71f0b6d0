"""Redaction of secrets in host and model text, and the probe names a model may ask for."""

from __future__ import annotations

import pytest

from remed_daemon.agents.probe import requested_probes
from remed_daemon.agents.redact import redact, scrub

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


def test_probe_requests_are_names_only() -> None:
    text = "PROBE: recent_log\n# probe: top_cpu\nPROBE: cat /etc/shadow\nnot a probe"
    assert requested_probes(text) == ["recent_log", "top_cpu", "cat /etc/shadow"]
