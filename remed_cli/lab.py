"""`remed stack` and `remed bench`: the dev stack (`remed_stack`) and the chaos lab (`chaos`).

Both run from the repository checkout (`make setup` installs it editable); they are not part of
the daemon's distribution, so an install without them says so instead of failing on an import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

LAB_MISSING = (
    "the {what} is not installed here: it runs from the repository checkout "
    "(`make setup`, then .venv/bin/remed), not from the daemon's wheel"
)


def _missing(command: str, what: str, exc: ModuleNotFoundError) -> int | None:
    """Exit 2 with a sentence when `exc` is the lab or dev stack itself missing, else None."""
    if (exc.name or "").split(".")[0] not in {"chaos", "remed_stack"}:
        return None
    print(f"remed {command}: " + LAB_MISSING.format(what=what), file=sys.stderr)
    return 2


def _use_system(command: str, path: str | None) -> int | None:
    """`--system FILE`: validate it and make it the lab's active system (chaos/system.py) for
    this process and what it starts; exit 2 with the file's error when it is not usable."""
    if not path:
        return None
    try:
        from chaos.system import ENV, SystemFileError, load
    except ModuleNotFoundError as exc:
        return _missing(command, "chaos lab (chaos)", exc) or 2
    try:
        load(path)
    except SystemFileError as exc:
        print(f"remed {command}: {exc}", file=sys.stderr)
        return 2
    os.environ[ENV] = os.path.abspath(path)
    return None


def _stack(args: argparse.Namespace) -> int:
    code = _use_system("stack", getattr(args, "system", None))
    if code is not None:
        return code
    try:
        from remed_stack import stack
        from remed_stack.paths import StackPaths
        from remed_stack.procs import StackError
    except ModuleNotFoundError as exc:
        code = _missing("stack", "dev stack (remed_stack)", exc)
        if code is None:
            raise
        return code

    paths = StackPaths.from_env()
    only = tuple(args.only.split(",")) if args.only else stack.COMPONENT_NAMES
    if args.action == "down" and getattr(args, "system", None):
        only = ("lab",)  # down --system FILE: that system's hosts, nothing else
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


def duration(text: str) -> float:
    """`1h`, `45m`, `30s` or plain seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1.0)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 1h, 45m, 900)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    code = _use_system("bench", args.system)
    if code is not None:
        return code
    try:
        from chaos.bench import run
        from chaos.faults import FaultError
        from chaos.lab.hosts import Lab
        from chaos.remediators import make_remediator
        from chaos.scenario import load_suite
    except ModuleNotFoundError as exc:
        code = _missing("bench", "chaos lab (chaos)", exc)
        if code is None:
            raise
        return code

    try:
        scenarios = load_suite(args.suite)
        if args.category:
            scenarios = [s for s in scenarios if s.category in args.category.split(",")]
        if args.limit:
            scenarios = scenarios[: args.limit]
        lab = Lab.from_paths()
        if not lab.inventory.exists():
            print("remed bench: lab hosts are not up: run `remed stack up`", file=sys.stderr)
            return 1
        remediator = make_remediator(args.remediator, lab, args.planner, args.timeout_s)
    except (FaultError, RuntimeError, ValueError) as exc:
        print(f"remed bench: {exc}", file=sys.stderr)
        return 2
    suite = Path(args.suite).stem if args.suite.endswith((".yaml", ".yml")) else args.suite
    if args.soak:
        from chaos.soak import markdown as soak_markdown
        from chaos.soak import run_soak

        report = run_soak(
            scenarios, remediator, Path(args.out), suite=suite, duration_s=args.soak, lab=lab,
            variants=args.variants, blind=args.blind,
        )
        print(soak_markdown(report))
        return 0 if not report["problems"] else 1
    summary = run(
        scenarios, remediator, Path(args.out), suite=suite, lab=lab, variants=args.variants,
        blind=args.blind,
    )  # fmt: skip
    print((Path(args.out) / "summary.md").read_text())
    print(json.dumps(summary))
    return 0


def add_stack(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stack = sub.add_parser("stack", help="local Kafka, Triton and lab hosts (state under .run/)")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--json", action="store_true", help="status as JSON (contract shape)")
    stack.add_argument("--only", help="comma-separated subset of kafka,lab,triton")
    stack.add_argument(
        "--system", metavar="FILE",
        help="up: also bring up the hosts of this lab system file (chaos/README.md); "
        "down: stop only its own hosts and forget it",
    )  # fmt: skip
    stack.set_defaults(func=_stack)


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="run chaos scenarios against a remediator")
    bench.add_argument("--suite", required=True, help="easy|medium|hard|all, or a file/dir")
    bench.add_argument(
        "--remediator", required=True,
        choices=("oracle", "rules", "runbook", "model", "daemon"),
    )
    bench.add_argument("--planner", help="the daemon's planner for --remediator daemon")
    bench.add_argument("--out", required=True, help="output directory (summary.json, cases/)")
    bench.add_argument("--category", help="only these categories (comma-separated)")
    bench.add_argument(
        "--system", metavar="FILE",
        help="the lab system to run on (default: the shop, chaos/systems/shop.yaml)",
    )  # fmt: skip
    bench.add_argument("--limit", type=int, help="only the first N scenarios")
    bench.add_argument(
        "--timeout-s", type=float, default=180.0, help="daemon: wait this long for an outcome"
    )
    bench.add_argument(
        "--variants",
        action="store_true",
        help="draw each fault's names (hog, nftables table, dumper, client, release...) from "
        "the scenario's seed (default: its id) instead of the fixed ones (chaos/variants.py)",
    )
    bench.add_argument(
        "--blind",
        action="store_true",
        help="send reports without a category and without the category's word in the text, as "
        "Alertmanager alerts arrive: the remediator must infer the fault",
    )
    bench.add_argument(
        "--soak",
        type=duration,
        metavar="DURATION",
        help="repeat the suite back to back for this long (e.g. 1h, 45m, 900) and report drift "
        "in DIR/soak.json; exit 1 on drift",
    )
    bench.set_defaults(func=_bench)
