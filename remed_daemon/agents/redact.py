"""Secret redaction for text that leaves a host or a model: probe output, Ansible events, diffs,
verifier evidence, log lines and outcomes all pass through `redact()` first.

It errs on the side of hiding: a false positive costs a few characters of evidence, a false
negative puts a credential on Kafka and into a training set.
"""

from __future__ import annotations

import re

MASK = "***"

_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# scheme://user:password@host  →  scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(@)")
# password=..., passwd: ..., secret = ..., api_key=..., token: ... (quoted or bare values)
_KEY_VALUE = re.compile(
    r"(?i)\b([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|credentials?)[a-z0-9_.-]*[\"']?\s*[:=]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,;&\"'}]+)"
)
_BEARER = re.compile(r"(?i)\b(authorization\s*:\s*(?:bearer|basic|token)\s+)(\S+)")
_BEARER_BARE = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{16,})")
_AWS_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[A-Z0-9]{16}\b")
_TOKENS = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
    r"sk-[A-Za-z0-9]{20,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
)


def redact(text: str) -> str:
    """`text` with private keys, URL passwords, `password=`-style values, bearer tokens and
    well-known token formats (AWS access keys, GitHub/GitLab/Slack tokens, JWTs) masked."""
    if not text:
        return text
    text = _PEM.sub("-----REDACTED PRIVATE KEY-----", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _BEARER_BARE.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _AWS_ACCESS_KEY.sub(MASK, text)
    return _TOKENS.sub(MASK, text)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying so when it was cut."""
    text = text.replace("\x00", "")
    if len(text) <= limit:
        return text
    return text[: max(limit - 40, 0)] + f" [truncated {len(text) - limit + 40} chars]"


def scrub(text: str, limit: int) -> str:
    """Redact, then clip: what every piece of host or model text goes through."""
    return clip(redact(text), limit)
