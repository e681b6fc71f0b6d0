"""Diagnosis reports in the phrasings remed meets in the field, so the model reads the incident
instead of matching one template.

Six families, each a function of the incident's fields (`chaos.scenario.TEMPLATES` gives every
category's summary and RCA paragraph; the fields are the recorded report's target and the
service's facts):

- `terse`: an alert line (`ALERT cpu-stress catalog@app: ...`), what a monitoring rule sends;
- `rca`: a verbose root-cause paragraph with the target's facts;
- `evidence`: the RCA paragraph plus the fault's confirm evidence as `evidence` lines;
- `kv`: an RCA engine's `key=value` output;
- `pager`: a paging line with a priority and an ack deadline;
- `chat`: an on-call engineer's chat message, lower case, no structure.

A report may drop its `category` (`blind`: Alertmanager alerts carry none, and the terse line
then names no category either) and may carry a misleading hint: another category's suspected
cause, stated as a guess. The expert's fix never follows the hint; the evidence decides.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

FAMILIES = ("terse", "rca", "evidence", "kv", "pager", "chat")

# What on-call people guess wrongly, per category: a plausible cause that is not this one.
MISLEADING = {
    "cpu-stress": "a memory leak in {service}",
    "memory-stress": "a CPU-bound batch job",
    "disk-io": "packet loss on the network",
    "network-loss": "a bad deploy of {service}",
    "network-delay": "CPU saturation on {host}",
    "service-down": "a full disk on {host}",
    "config-error": "the database being down",
    "dependency-down": "a config typo in {service}",
    "port-conflict": "a crash loop after the last deploy",
    "log-flood": "a memory hog on {host}",
    "wrong-permissions": "the service's port being taken",
    "bad-deploy": "network latency to its dependencies",
    "tls-cert": "nginx being overloaded",
    "connection-exhaustion": "slow disk I/O on the database host",
}


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def render(
    family: str,
    *,
    category: str,
    summary: str,
    rca: str,
    facts: str,
    service: str,
    host: str,
    evidence: Sequence[str] = (),
    blind: bool = False,
    hint: str = "",
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """The `summary`, `report` and optional `evidence` fields of a diagnosis report."""
    rng = rng or random.Random(0)
    fields: dict[str, Any] = {"summary": summary}
    guess = f" On-call suspects {hint}." if hint else ""
    if family == "terse":
        label = f"{service}@{host}" if blind else f"{category} {service}@{host}"
        fields["report"] = f"ALERT {label}: {summary}" + (f" (guess: {hint})" if hint else "")
    elif family == "rca":
        fields["report"] = f"{_sentence(rca)}{guess} {facts}".strip()
    elif family == "evidence":
        fields["report"] = f"{_sentence(rca)}{guess}".strip()
        fields["evidence"] = list(evidence)
    elif family == "kv":
        pairs = [
            ("engine", rng.choice(["rcaflow", "causely", "rootbeer", "deepdiag"])),
            ("incident", f"{rng.randrange(10_000, 99_999)}"),
            ("service", service),
            ("host", host),
        ]
        if not blind:
            pairs.append(("root_cause_class", category))
        pairs += [
            ("confidence", f"{rng.uniform(0.55, 0.97):.2f}"),
            ("symptom", '"' + summary.replace('"', "'") + '"'),
        ]
        if hint:
            pairs.append(("alt_hypothesis", '"' + hint + '"'))
        fields["report"] = " ".join(f"{k}={v}" for k, v in pairs)
    elif family == "pager":
        prio = rng.choice(["P1", "P2", "SEV2", "SEV1"])
        tag = "" if blind else f" [{category}]"
        fields["report"] = (
            f"[{prio}]{tag} {host}/{service}: {summary} -- ack within "
            f"{rng.choice([5, 10, 15])}m" + (f"; maybe {hint}" if hint else "")
        )
    elif family == "chat":
        opener = rng.choice(["hey team,", "heads up:", "@oncall", "anyone around?"])
        body = summary[0].lower() + summary[1:]
        what = "" if blind else f" looks like {category.replace('-', ' ')} to me."
        fields["report"] = (
            f"{opener} {body} -- {service} on {host} is not happy.{what}"
            + (f" could it be {hint}?" if hint else "")
            + " can someone take a look"
        )
    else:
        raise ValueError(f"unknown phrasing family {family!r}; known: {', '.join(FAMILIES)}")
    return fields


def misleading_hint(category: str, values: Mapping[str, Any]) -> str:
    return MISLEADING[category].format(**values)
