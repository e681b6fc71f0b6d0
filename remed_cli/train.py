"""`remed train ...`: the trainer's stages (trainer/), one `add_*` function per subcommand.

    remed train sft --config trainer/configs/sft.toml        # train or resume the run
    remed train promote runs/sft/sft-v1 --stage              # write the candidate version N
    remed train eval --version N ... --out runs/sft/sft-v1/eval/candidate   (train_data.py)
    remed train promote runs/sft/sft-v1                      # gate, then `remed model load N`

The trainer runs from the repository checkout (`make setup`), not from the daemon's wheel.
Exit codes: 0 done, 1 refused or failed, 2 bad input (a message says what).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

Subparsers = Any  # argparse's private _SubParsersAction

MISSING = (
    "remed train: the trainer is not installed here: it runs from the repository checkout "
    "(`make setup`, then .venv/bin/remed), not from the daemon's wheel"
)


def _sft(args: argparse.Namespace) -> int:
    try:
        from trainer import sft
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "trainer":
            raise
        print(MISSING, file=sys.stderr)
        return 2
    return sft.run_command(args)


def _promote(args: argparse.Namespace) -> int:
    from remed_cli.daemon import _model_versions
    from remed_daemon.errors import ConfigError
    from remed_daemon.model_versions import ModelVersionError
    from trainer import gate, promote

    run_dir = Path(args.run)
    model_dir = Path(args.model_repo) if args.model_repo else promote.MODEL_DIR
    try:
        if args.stage:
            parent = None
            try:
                served = _model_versions(args).served()
                parent = served[0] if len(served) == 1 else None
            except (ConfigError, ValueError, ModelVersionError):
                pass  # staging needs no Triton; the card says the parent is unknown
            version = promote.stage(
                run_dir, model_dir=model_dir, weights=args.weights, parent=parent
            )
            print(version)
            return 0
        outcome = promote.promote(
            run_dir,
            _model_versions(args),
            candidate_eval=Path(args.eval) if args.eval else None,
            served_eval=Path(args.baseline) if args.baseline else None,
            suite=args.suite,
            model_dir=model_dir,
            weights=args.weights,
            load=not args.no_load,
        )
    except (promote.PromoteError, gate.GateError, ConfigError, ValueError) as exc:
        print(f"remed train promote: {exc}", file=sys.stderr)
        return 2
    except ModelVersionError as exc:
        print(f"remed train promote: {exc}", file=sys.stderr)
        return 1
    promote.print_outcome(outcome)
    return 0 if outcome.promoted or (outcome.decision and outcome.decision.passed) else 1


def add_sft(sub: Subparsers) -> None:
    p = sub.add_parser("sft", help="stage 1: supervised fine-tuning (resumes a killed run)")
    try:
        from trainer.sft import add_arguments  # argparse only: no torch at parser time
    except ModuleNotFoundError:  # the daemon's wheel: `_sft` says where the trainer runs
        p.add_argument("--config")
    else:
        add_arguments(p)
    p.set_defaults(func=_sft)


def add_promote(sub: Subparsers) -> None:
    p = sub.add_parser(
        "promote", help="gate a finished run against the served version; serve it if it passes"
    )
    p.add_argument("run", metavar="RUN", help="the run directory (runs/sft/NAME)")
    p.add_argument(
        "--stage",
        action="store_true",
        help="only write the candidate version directory (for `remed train eval`); print N",
    )
    p.add_argument("--eval", help="the candidate's evaluation.json (default RUN/eval/candidate/)")
    p.add_argument(
        "--baseline", help="the served version's evaluation.json (default RUN/eval/served/)"
    )
    p.add_argument(
        "--suite",
        default="oneshot/gate",
        help="the live row the gate compares, <oneshot|loop>/<suite> (default oneshot/gate)",
    )
    p.add_argument(
        "--weights",
        default="q8",
        choices=("q8", "fp32", "q4"),
        help="the format the version pins in serving.json (default q8)",
    )
    p.add_argument("--no-load", action="store_true", help="gate only; do not serve it")
    p.add_argument("--model-repo", metavar="DIR", help="the model's directory (remed_planner)")
    p.add_argument("--url", help="Triton's HTTP URL (default: the dev stack's)")
    p.add_argument("--config", help="the daemon's TOML config (triton_url, state_dir)")
    p.add_argument("--state-file", metavar="FILE", help="the version history (remed model)")
    p.set_defaults(func=_promote)


def _real_rft(args: argparse.Namespace) -> int:
    from trainer.real_rft.service import run_command

    return run_command(args)


def add_real_rft(sub: Subparsers) -> None:
    p = sub.add_parser(
        "real-rft", help="stage 3: learn online from remed.outcomes and remed.feedback (service)"
    )
    try:
        from trainer.real_rft.service import add_arguments
    except ModuleNotFoundError:
        p.add_argument("--config")
    else:
        add_arguments(p)
    p.set_defaults(func=_real_rft)


def _torch_first(handler: Any) -> Any:
    """`handler`, importing torch first where it is installed (trainer/torch_import.py says why)."""

    def run(args: argparse.Namespace) -> int:
        try:
            from trainer.torch_import import import_torch

            import_torch()
        except ModuleNotFoundError:
            pass  # no torch or no trainer here: the handler says what is missing
        code: int = handler(args)
        return code

    return run


def add_train(sub: Subparsers) -> None:
    train = sub.add_parser("train", help="the trainer's stages: data, sft, eval, promote")
    stages = train.add_subparsers(dest="train_command", required=True)
    from remed_cli import sim_rft, train_data

    train_data.add_data(stages)
    add_sft(stages)
    train_data.add_eval(stages)
    add_promote(stages)
    sim_rft.add_sim_rft(stages)
    add_real_rft(stages)
    for stage in stages.choices.values():
        stage.set_defaults(func=_torch_first(stage.get_default("func")))
