"""Outcome documents apart from the Kafka producer (remed_daemon.outcomes): executing a task,
running the loop or scheduling builds outcomes without loading the producer or aiokafka."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "module",
    ["remed_daemon.agents.execute", "remed_daemon.agents.loop", "remed_daemon.scheduler",
     "remed_daemon.outcomes.document"],
)  # fmt: skip
def test_building_outcomes_never_imports_the_producer(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m == 'remed_daemon.outcomes.producer' or m.split('.')[0] == 'aiokafka')\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} loads {out.stdout.strip()}"
