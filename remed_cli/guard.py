"""`remed guard check PLAYBOOK --hosts H1,H2 [--json]`: the daemon's guard on a playbook file.

Exit 0 allowed automatically, 3 allowed only with a person's approval, 1 rejected, 2 usage
error (ARCHITECTURE.md, commands).
"""

from __future__ import annotations

import argparse
import json
import sys


def _guard(args: argparse.Namespace) -> int:
    from remed_daemon.guard import EXIT_USAGE, GuardUsageError, check_playbook

    try:
        with open(args.playbook, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        print(f"remed guard check: cannot read {args.playbook}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        verdict = check_playbook(text, args.hosts)
    except GuardUsageError as exc:
        print(f"remed guard check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        state = "rejected" if not verdict.allowed else f"allowed, risk {verdict.risk}"
        if verdict.needs_approval:
            state += " (needs a person's approval)"
        elif verdict.check_first:
            state += " (runs --check --diff first)"
        print(f"{args.playbook}: {state}")
        for v in verdict.violations:
            print(f"  REJECT {v.rule} [{v.task}]: {v.detail}")
        for v in verdict.reasons:
            print(f"  risk   {v.rule} [{v.task}]: {v.detail}")
    return verdict.exit_code


def add_guard(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    guard = sub.add_parser("guard", help="judge a playbook with the safety guard")
    guard_sub = guard.add_subparsers(dest="guard_action", required=True)
    check = guard_sub.add_parser(
        "check", help="exit 0 allowed (low/medium risk), 3 needs approval, 1 rejected, 2 usage"
    )
    check.add_argument("playbook", help="playbook YAML file")
    check.add_argument("--hosts", required=True, help="the incident's hosts, comma-separated")
    check.add_argument("--json", action="store_true", help="verdict as JSON (contract shape)")
    check.set_defaults(func=_guard)
