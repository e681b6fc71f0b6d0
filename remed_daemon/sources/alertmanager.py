"""Alertmanager webhook payloads (version 4): validation with precise messages, and mapping of
each alert to a diagnosis report.

Mapping: the target service comes from the first present label of `http.service_labels`
(service, job, app), the host from `http.host_labels` (host, instance, node; an `instance`'s
`:port` is dropped), the report's `category` hint from a `category` label (the shipped rules
in deploy/prometheus/rules/ set one per fault category). Summary from the `summary`
annotation (else `description`, else the alertname); the remaining annotations and the
labels become evidence lines. Alert text is untrusted: values are clipped, and they only ever
reach the planner as quoted data.

Identity: an alert is (fingerprint, startsAt). Its idempotency key `am:<fingerprint>:<startsAt>`
makes every redelivery (Alertmanager is at-least-once, retries 5xx, repeats every
repeat_interval) land on the same incident; a `resolved` alert with the same key cancels the
incident if no playbook has started.

`python -m remed_daemon.sources.alertmanager < payload.json` prints the reports a payload maps to.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from remed_daemon.errors import IntakeRejected
from remed_daemon.schemas import iter_errors

MAX_ALERTS = 1000
MAX_TEXT_CHARS = 2000
MAX_EVIDENCE = 20
SEVERITIES = ("info", "warning", "critical")
_FINGERPRINT = re.compile(r"^[0-9A-Za-z]{1,64}$")


@dataclass(frozen=True)
class MappedAlert:
    status: str  # firing | resolved
    idem_key: str
    fingerprint: str
    target: str  # service@host, or '' when no label names one
    report: dict[str, Any]
    unroutable: str = ""  # why no target could be found


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 12] + " [truncated]"


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise IntakeRejected(f"{where}: expected an object of strings, got {_kind(value)}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise IntakeRejected(f"{where}.{k}: expected a string, got {_kind(v)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _timestamp(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise IntakeRejected(f"{where}: expected an RFC 3339 timestamp string, got {_kind(value)}")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise IntakeRejected(f"{where}: {value[:64]!r} is not an RFC 3339 timestamp") from None
    return value


def parse_payload(body: bytes) -> dict[str, Any]:
    """Decode and structurally check a v4 payload; IntakeRejected says exactly what is wrong."""
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise IntakeRejected("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise IntakeRejected(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise IntakeRejected(f"payload must be a JSON object, got {_kind(doc)}")
    version = doc.get("version")
    if version != "4":
        raise IntakeRejected(f"version: expected \"4\" (Alertmanager webhook v4), got {version!r}")
    if not isinstance(doc.get("groupKey"), str):
        raise IntakeRejected(f"groupKey: expected a string, got {_kind(doc.get('groupKey'))}")
    if doc.get("status") not in ("firing", "resolved"):
        raise IntakeRejected(f"status: expected 'firing' or 'resolved', got {doc.get('status')!r}")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise IntakeRejected("alerts: expected a non-empty list")
    if len(alerts) > MAX_ALERTS:
        raise IntakeRejected(f"alerts: at most {MAX_ALERTS} per request, got {len(alerts)}")
    for field in ("groupLabels", "commonLabels", "commonAnnotations"):
        if field in doc:
            _str_map(doc[field], field)
    for i, alert in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(alert, dict):
            raise IntakeRejected(f"{where}: expected an object, got {_kind(alert)}")
        if alert.get("status") not in ("firing", "resolved"):
            raise IntakeRejected(
                f"{where}.status: expected 'firing' or 'resolved', got {alert.get('status')!r}"
            )
        _str_map(alert.get("labels"), f"{where}.labels")
        _str_map(alert.get("annotations", {}), f"{where}.annotations")
        _timestamp(alert.get("startsAt"), f"{where}.startsAt")
        fp = alert.get("fingerprint")
        if not isinstance(fp, str) or not _FINGERPRINT.match(fp):
            raise IntakeRejected(
                f"{where}.fingerprint: expected 1-64 letters or digits, got {str(fp)[:80]!r}"
            )
    return doc


def _first(labels: Mapping[str, str], names: Sequence[str]) -> str:
    for n in names:
        if labels.get(n):
            return labels[n]
    return ""


def map_alerts(
    doc: Mapping[str, Any],
    service_labels: Sequence[str],
    host_labels: Sequence[str],
    received_at: str = "",
) -> list[MappedAlert]:
    """Each alert of a checked payload as a diagnosis report (schema `diagnosis-report`)."""
    out: list[MappedAlert] = []
    for alert in doc["alerts"]:
        labels: dict[str, str] = alert["labels"]
        ann: dict[str, str] = alert.get("annotations") or {}
        fp, starts = alert["fingerprint"], alert["startsAt"]
        service = _first(labels, service_labels)
        host = _first(labels, host_labels)
        if host and "instance" in host_labels and host == labels.get("instance"):
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        idem = f"am:{fp}:{starts}"
        report_id = "am-" + hashlib.sha256(idem.encode()).hexdigest()[:32]
        alertname = labels.get("alertname", "alert")
        summary = ann.get("summary") or ann.get("description") or alertname
        evidence = [
            _clip(f"annotation {k}: {v}") for k, v in sorted(ann.items()) if k != "summary"
        ]
        severity = labels.get("severity", "warning").lower()
        report: dict[str, Any] = {
            "schema_version": 1,
            "report_id": report_id,
            "source": "alertmanager",
            "target": {"service": service, "host": host},
            "severity": severity if severity in SEVERITIES else "warning",
            "summary": _clip(summary, 1000) or alertname,
            "report": _clip(ann.get("description", summary)),
            "evidence": evidence[:MAX_EVIDENCE],
            "labels": {k: _clip(v, 1024) for k, v in sorted(labels.items())[:64]},
            "fingerprint": fp,
            "starts_at": starts,
            "status": alert["status"],
        }
        if received_at:
            report["received_at"] = received_at
        # the alert rule's fault category (deploy/prometheus/rules/): a hint for the probes
        # and the planner, like a Kafka report's; the schema's pattern keeps it a plain name
        category = labels.get("category", "")
        if category and not iter_errors("diagnosis-report", {**report, "category": category}):
            report["category"] = category
        why = ""
        if not service or not host:
            why = (
                f"no target: none of the labels {list(service_labels)} / {list(host_labels)} "
                "names the service and host"
            )
        else:
            errors = iter_errors("diagnosis-report", report)
            if errors:
                why = "alert does not map to a valid diagnosis report: " + "; ".join(errors[:3])
        out.append(
            MappedAlert(
                status=alert["status"],
                idem_key=idem,
                fingerprint=fp,
                target="" if why else f"{service}@{host}",
                report=report,
                unroutable=why,
            )
        )
    return out


def main() -> int:
    try:
        doc = parse_payload(sys.stdin.buffer.read())
    except IntakeRejected as exc:
        print(f"invalid payload: {exc}", file=sys.stderr)
        return 1
    for m in map_alerts(doc, ("service", "job", "app"), ("host", "instance", "node")):
        print(json.dumps({"status": m.status, "idem_key": m.idem_key, "report": m.report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
