"""The `remed` command: parse arguments and call into the package; no logic lives here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _stack(args: argparse.Namespace) -> int:
    from remed_stack import stack
    from remed_stack.paths import StackPaths
    from remed_stack.procs import StackError

    paths = StackPaths.from_env()
    only = tuple(args.only.split(",")) if args.only else stack.COMPONENT_NAMES
    try:
        if args.action == "up":
            if "lab" in only and os.geteuid() != 0:
                print("remed stack up: lab hosts need root (network namespaces)", file=sys.stderr)
                return 2
            stack.up(paths, only)
            print(stack.format_status(stack.status(paths)))
            return 0
        if args.action == "down":
            stack.down(paths, only)
            print("stack down")
            return 0
        report = stack.status(paths)
        print(stack.dumps(report) if args.json else stack.format_status(report))
        return 0 if stack.all_ok(report) else 1
    except StackError as exc:
        print(f"remed stack {args.action}: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from remed_daemon.app import serve

    return serve(Path(args.config) if args.config else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="local Kafka, Triton and lab hosts (state under .run/)")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--json", action="store_true", help="status as JSON (contract shape)")
    stack.add_argument("--only", help="comma-separated subset of kafka,lab,triton")
    stack.set_defaults(func=_stack)

    serve = sub.add_parser("serve", help="run the daemon (intakes, journal, remediation)")
    serve.add_argument("--config", help="TOML config file (systemd/remed.toml.example)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
