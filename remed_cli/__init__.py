"""The umbrella `remed` command: parse arguments, then call into the package that does the work.

It dispatches to the daemon (`serve`, `approve`/`reject`, `config check`, `model`), the guard
(`guard check`), and the lab and dev stack (`bench`, `stack`), which run from the repository
checkout; the trainer's `train` joins them when it lands. No logic lives here, and this is the
only place that knows about all of them: `remed_daemon` imports none of the lab, the dev stack or
the trainer (ARCHITECTURE.md, boundaries).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from remed_cli import daemon, feedback, guard, lab, operator, train

DISTRIBUTION = "remed"


def version() -> str:
    """The installed distribution's version (the wheel's, or the editable checkout's)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remed",
        description="remed: LLM-driven auto-remediation for microservices; diagnosis in, "
        "verified Ansible fix out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    lab.add_stack(sub)
    daemon.add_serve(sub)
    guard.add_guard(sub)
    lab.add_bench(sub)
    daemon.add_decide(sub)
    daemon.add_config(sub)
    daemon.add_model(sub)
    feedback.add_feedback(sub)
    operator.add_operator(sub)
    train.add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
