"""`python -m chaos.lab [--system FILE] provision|probe|load`: the lab system from a shell
(lab hosts must be up)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.lab", description=__doc__)
    parser.add_argument(
        "--system", metavar="FILE",
        help="the lab system file (default: $REMED_LAB_SYSTEM, else chaos/systems/shop.yaml)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("provision", help="bring the lab system to its baseline (idempotent)")
    sub.add_parser("probe", help="steady-state probe: health of every service and e2e orders")
    load = sub.add_parser("load", help="bounded load through the system's e2e entry")
    load.add_argument("--rps", type=float, default=20.0)
    load.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.system:
        from chaos.system import ENV, SystemFileError
        from chaos.system import load as load_system

        try:
            load_system(args.system)
        except SystemFileError as exc:
            print(f"python -m chaos.lab: {exc}", file=sys.stderr)
            return 2
        os.environ[ENV] = os.path.abspath(args.system)
    from chaos.lab import probes, provision, topology

    topology.use()
    if args.action == "provision":
        print(json.dumps(asdict(provision.ensure())))
        return 0
    if args.action == "probe":
        state = probes.steady_state()
        print(json.dumps(asdict(state)))
        return 0 if state.ok else 1
    stats = probes.load(args.rps, args.duration_s)
    print(json.dumps(stats.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
