"""`remed train sim-rft`: stage 2 of the trainer (trainer/sim_rft.py does the work).

    remed train sim-rft [--config trainer/configs/sim-rft.toml] [--run-dir DIR]
                        [--max-steps N] [--from-version N] [--dataset DIR]

The same command resumes a stopped run from its last checkpoint. `add_sim_rft` adds the
subcommand to the `remed train` subparsers. Exit codes: 0 done, 2 a bad config (the message
names the key), 1 anything else.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "trainer" / "configs" / "sim-rft.toml"


def _run(args: argparse.Namespace) -> int:
    from trainer.sim_rft import run_command

    return run_command(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="TOML file with a [sim_rft] table (default %(default)s)")  # fmt: skip
    parser.add_argument("--run-dir", help="override run_dir")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--from-version", help="override from_version (a version number)")
    parser.add_argument("--dataset", help="override dataset (an SFT dataset directory)")
    parser.set_defaults(func=_run)


def add_sim_rft(train_sub: Any) -> None:
    """`train_sub`: the subparsers of `remed train`."""
    parser = train_sub.add_parser(
        "sim-rft", help="GRPO with rewards from fixing faults in the live chaos lab",
        description=__doc__.split("\n")[0],
    )  # fmt: skip
    add_arguments(parser)
