"""`remed train data ...` and `remed train eval`: the SFT stage's data and its evaluation.

    remed train data record --name shop-v1 [--suite FILE] [--seeds N]
    remed train data build --name sft-v1 --evidence trainer/data/evidence/shop-v1.jsonl
    remed train data check trainer/data/sft-v1
    remed train eval --version N --dataset trainer/data/sft-v1 --out runs/eval/N

Exit codes: 0 done, 2 bad input (a message says what), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

Subparsers = Any  # argparse's private _SubParsersAction

ROOT = Path(__file__).resolve().parent.parent


def _data(args: argparse.Namespace) -> int:
    from trainer import data, record

    if args.data_action == "record":
        path = record.record(
            args.name, suite=args.suite or "", seeds=args.seeds, variants=args.variants
        )
        print(f"evidence: {path} ({sum(1 for _ in path.open())} cases)")
        return 0
    if args.data_action == "build":
        evidence = [Path(p) for p in args.evidence]
        missing = [str(p) for p in evidence if not p.is_file()]
        if missing:
            print(f"remed train data build: no such evidence file: {', '.join(missing)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        try:
            out = data.write_dataset(
                args.name, evidence, seed=args.seed, train_renamings=args.renamings,
                train_per_turn=_per_turn(args.train_per_turn),
                validation_limit=args.validation_limit,
            )  # fmt: skip
        except data.DataError as exc:
            print(f"remed train data build: {exc}", file=sys.stderr)
            return 2
        manifest = json.loads((out / "manifest.json").read_text())
        files = ", ".join(f"{k} {v['examples']}" for k, v in manifest["files"].items())
        print(f"dataset: {out} ({files}); manifest checked")
        return 0
    try:
        manifest = data.check_manifest(Path(args.dataset))
    except (data.DataError, OSError, ValueError) as exc:
        print(f"remed train data check: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: hashes match, test split apart from training "
          f"(held out: {manifest['held_out']})")  # fmt: skip
    return 0


def _served() -> list[int]:
    out = subprocess.run(
        [sys.executable, "-m", "remed_cli", "model", "status", "--json"], capture_output=True,
        text=True, cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    return [int(v) for v in json.loads(out.stdout).get("served", [])]


def _load(version: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "remed_cli", "model", "load", str(version)], cwd=ROOT,
        timeout=900, check=True,
    )  # fmt: skip


class _CliVersions:
    """The dev stack's versions through `remed model status|load` (its history file too)."""

    def served(self) -> list[int]:
        return _served()

    def load(self, version: int) -> None:
        _load(version)


def _eval(args: argparse.Namespace) -> int:
    from remed_stack.paths import StackPaths
    from remed_stack.triton import Triton
    from trainer import evaluate

    out = Path(args.out)
    url = args.url or Triton(StackPaths.from_env()).http_url
    try:
        result = evaluate.evaluate_version(
            args.version, _CliVersions(), url=url, out=out,
            dataset=Path(args.dataset) if args.dataset else None, split=args.split,
            limit=args.limit, concurrency=args.concurrency, suites=args.suite or (),
            loop_suites=args.loop_suite or (), restore=args.restore,
        )  # fmt: skip
    except evaluate.EvaluationError as exc:
        print(f"remed train eval: {exc}", file=sys.stderr)
        return 2
    offline = result.get("offline")
    if offline:
        print(f"offline {args.split}: {offline['matched']}/{offline['total']} match the "
              f"expert; guard refused {offline['guard_refused']}")  # fmt: skip
    if result["live"]:
        print((out / "table.md").read_text())
    print(f"evaluation: {out / 'evaluation.json'}")
    return 0


def _per_turn(text: str | None) -> dict[str, int]:
    """`oneshot=188,probed=110`: the training examples kept per turn kind."""
    from trainer import data

    out: dict[str, int] = {}
    for part in filter(None, (text or "").split(",")):
        turn, _, count = part.partition("=")
        if turn not in data.TURNS or not count.isdigit():
            raise data.DataError(
                f"--train-per-turn: {part!r} is not TURN=COUNT with TURN one of "
                f"{', '.join(data.TURNS)}"
            )
        out[turn] = int(count)
    return out


def add_data(sub: Subparsers) -> None:
    p = sub.add_parser("data", help="record evidence in the lab and build the SFT dataset")
    actions = p.add_subparsers(dest="data_action", required=True)
    rec = actions.add_parser("record", help="record probes and verifier evidence per fault")
    rec.add_argument("--name", required=True, help="evidence file name (trainer/data/evidence/)")
    rec.add_argument("--suite", help="a suite name or file (default: every catalog pair)")
    rec.add_argument("--seeds", type=int, default=1, help="recordings per pair (default 1)")
    rec.add_argument("--variants", action="store_true",
                     help="draw each fault's names from the recording's seed")  # fmt: skip
    build = actions.add_parser("build", help="build train/validation/test from evidence")
    build.add_argument("--name", required=True, help="dataset name (trainer/data/NAME/)")
    build.add_argument("--evidence", nargs="+", required=True, help="evidence JSONL files")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--renamings", type=int, default=1,
                       help="training renamings per recorded incident (default 1)")  # fmt: skip
    build.add_argument("--train-per-turn", metavar="TURN=N,...",
                       help="keep at most N training examples of each turn kind, round robin "
                       "over the (service, category) pairs (a token budget)")  # fmt: skip
    build.add_argument("--validation-limit", type=int,
                       help="keep the first N validation examples")  # fmt: skip
    check = actions.add_parser("check", help="verify a dataset's hashes and separation")
    check.add_argument("dataset")
    p.set_defaults(func=_data)


def add_eval(sub: Subparsers) -> None:
    p = sub.add_parser("eval", help="evaluate a served version offline and live")
    p.add_argument("--version", type=int, help="version to evaluate (default: the served one)")
    p.add_argument("--dataset", help="dataset directory for the offline evaluation")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--limit", type=int, help="only N examples offline, spread over the split")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--suite", action="append", help="one-shot `remed bench` suite (repeatable)")
    p.add_argument("--loop-suite", action="append",
                   help="ThinkRemed loop suite via the daemon (repeatable)")  # fmt: skip
    p.add_argument("--out", required=True, help="output directory (evaluation.json, table.md)")
    p.add_argument("--url", help="Triton HTTP address (default: the dev stack's)")
    p.add_argument("--no-restore", dest="restore", action="store_false",
                   help="keep the evaluated version served afterwards")  # fmt: skip
    p.set_defaults(func=_eval)
