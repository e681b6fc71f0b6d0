"""`python -m chaos.lab provision|probe|load`: the shop from a shell (lab hosts must be up)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    from chaos.lab import probes, provision

    parser = argparse.ArgumentParser(prog="python -m chaos.lab", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("provision", help="bring the shop to its baseline (idempotent)")
    sub.add_parser("probe", help="steady-state probe: health of every service and e2e orders")
    load = sub.add_parser("load", help="bounded load through nginx")
    load.add_argument("--rps", type=float, default=20.0)
    load.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args(argv)
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
