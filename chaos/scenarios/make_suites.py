"""Regenerate the suite files of a lab system (deterministic):

    python chaos/scenarios/make_suites.py                      # the shop: chaos/scenarios/*.yaml
    python chaos/scenarios/make_suites.py --system FILE [--out DIR]

A bundled system's suites go to chaos/scenarios/<name>/, any other system's to --out. What
each suite holds is chaos/suites.py's rule, read from the system file; no service is named here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chaos import suites
from chaos.lab import topology

# The active system's per-category targets and service hosts, for importers of this module
# (trainer/record.py walks every (service, category) pair of the catalog).
TARGETS = suites.targets()
HOST = {name: svc.host for name, svc in topology.SERVICES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="", help="the lab system file (default: the shop)")
    parser.add_argument("--out", type=Path, help="where to write (default: see above)")
    args = parser.parse_args(argv)
    topology.use(args.system or None)
    out = args.out or suites.suites_dir()
    if out is None:
        parser.error(f"{args.system} is not a bundled system: say where with --out DIR")
    for name, n in suites.write(out, args.system).items():
        print(name, n, out / f"{name}.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
