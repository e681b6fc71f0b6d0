"""`remed feedback ID --verdict good|bad|unsafe [--playbook FILE] [--comment T] [--by NAME]`:
a schema-valid message on `remed.feedback` (remed_daemon/feedback.py does the work).

A corrected playbook is judged by the guard against the incident's hosts first: `--hosts`, or
the incident's target (and its dependencies' hosts) read from the daemon's journal under the
config's state directory. Exit 0 sent, 1 refused by the guard or not acknowledged by Kafka,
2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remed_daemon.config import Config

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _fail(code: int, message: str) -> int:
    print(f"remed feedback: {message}", file=sys.stderr)
    return code


async def _hosts_from_journal(cfg: Config, incident_id: str) -> list[str] | None:
    from remed_daemon.feedback import incident_hosts
    from remed_daemon.journal import Journal

    if not cfg.journal_path.is_file():
        return None
    async with Journal(cfg.journal_path) as journal:
        incident = await journal.get(incident_id)
    return incident_hosts(cfg, incident.target) if incident is not None else None


def _run(args: argparse.Namespace) -> int:
    from remed_daemon import config as config_mod
    from remed_daemon.errors import ConfigError, RemedError
    from remed_daemon.feedback import (
        FeedbackRefused,
        FeedbackUnsent,
        feedback_doc,
        judge_correction,
        send_feedback,
        violations_doc,
    )

    env = dict(os.environ)
    if not args.config:
        # only [kafka] matters here; without a file the [http] defaults would ask for a token
        env.setdefault("REMED_HTTP_ENABLED", "false")
    if args.bootstrap:
        env["REMED_KAFKA_BOOTSTRAP"] = args.bootstrap
    try:
        cfg = config_mod.load(Path(args.config) if args.config else None, env)
    except ConfigError as exc:
        return _fail(2, str(exc))
    playbook: str | None = None
    if args.playbook:
        try:
            playbook = sys.stdin.read() if args.playbook == "-" else Path(args.playbook).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(2, f"--playbook {args.playbook}: cannot read it ({exc})")
        hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
        if not hosts:
            try:
                found = asyncio.run(_hosts_from_journal(cfg, args.incident_id))
            except (OSError, RemedError, ValueError) as exc:
                found = None
                print(f"remed feedback: cannot read {cfg.journal_path}: {exc}", file=sys.stderr)
            if not found:
                return _fail(2, f"incident {args.incident_id!r} is not in {cfg.journal_path}: "
                             "pass --hosts H1,H2 (the incident's hosts) so the guard can judge "
                             "the corrected playbook")  # fmt: skip
            hosts = found
        try:
            verdict = judge_correction(playbook, hosts)
        except FeedbackRefused as exc:
            if args.json:
                print(json.dumps({"sent": False, "violations": violations_doc(exc.verdict)}))
            else:
                print(f"remed feedback: {exc}", file=sys.stderr)
                for v in exc.verdict.violations:
                    print(f"  {v.rule} ({v.task}): {v.detail}", file=sys.stderr)
            return 1
        if verdict.needs_approval:
            print(f"remed feedback: note: the corrected playbook is {verdict.risk} risk; the "
                  "daemon would wait for a person before running it", file=sys.stderr)  # fmt: skip
    by = args.by or os.environ.get("SUDO_USER") or os.environ.get("USER") or None
    try:
        doc = feedback_doc(
            args.incident_id,
            args.verdict,
            corrected_playbook=playbook,
            comment=args.comment,
            author=by,
            feedback_id=args.feedback_id,
        )
    except RemedError as exc:
        return _fail(2, str(exc))
    try:
        receipt = asyncio.run(send_feedback(cfg.kafka, doc))
    except FeedbackUnsent as exc:
        return _fail(1, str(exc))
    answer: dict[str, Any] = {
        "sent": True,
        "feedback_id": doc["feedback_id"],
        "topic": receipt.topic,
        "partition": receipt.partition,
        "offset": receipt.offset,
    }
    if args.json:
        print(json.dumps(answer))
    else:
        print(f"{args.incident_id}: {args.verdict} sent to {receipt.topic} "
              f"({doc['feedback_id']})")  # fmt: skip
    return 0


def add_feedback(sub: Subparsers) -> None:
    p = sub.add_parser(
        "feedback",
        help="tell the trainer what you think of a remediation (remed.feedback)",
        description="Publish a schema-valid feedback message on kafka.feedback_topic. A "
        "corrected playbook is judged by the guard first and refused with its violations.",
    )
    p.add_argument("incident_id", help="the outcome's incident_id")
    p.add_argument("--verdict", required=True, choices=("good", "bad", "unsafe"))
    p.add_argument("--playbook", help="the playbook that should have run (YAML file, - = stdin)")
    p.add_argument("--comment", help="free text (at most 4000 characters)")
    p.add_argument("--by", help="who you are (default: $SUDO_USER or $USER)")
    p.add_argument("--hosts", help="the incident's hosts for the guard (default: from the "
                   "daemon's journal)")  # fmt: skip
    p.add_argument("--feedback-id", help="an id of your own; sending it again counts once")
    p.add_argument("--config", help="the daemon's TOML config (Kafka settings, state_dir)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides kafka.bootstrap)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run)
