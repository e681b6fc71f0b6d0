"""Session fixtures for the real stack.

Each fixture reuses a component that is already up (a developer's `remed stack up`) and
otherwise brings it up for the session and stops it afterwards. There is no skip path: a test
that needs Kafka, Triton or the lab hosts fails when it cannot have them, in CI and locally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Import torch's compiler stack before anything imports Ansible: ansible-core 2.19 replaces
# sys.intern with a patch object, and torch._dynamo, imported later (by transformers in the
# planner tests), refuses to register its substitute for a sys.intern that is not a function.
import torch._dynamo  # noqa: F401

from remed_stack.paths import StackPaths
from remed_stack.stack import make_component

# ansible-runner and the daemon find `ansible-playbook` on PATH; make it the venv's own even when
# pytest is started as .venv/bin/pytest without an activated venv.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def stack_paths() -> StackPaths:
    return StackPaths.from_env()


def _component(name: str, paths: StackPaths) -> Iterator[Any]:
    component = make_component(name, paths)
    started = not component.status()["ok"] if name != "lab" else not _lab_ok(component)
    if started:
        component.up()
    try:
        yield component
    finally:
        if started:
            component.down()


def _lab_ok(lab: Any) -> bool:
    hosts = lab.status().get("hosts", [])
    return bool(hosts) and all(h["ok"] for h in hosts)


@pytest.fixture(scope="session")
def kafka(stack_paths: StackPaths) -> Iterator[Any]:
    """The running broker (`remed_stack.kafka.Kafka`); `.bootstrap` is its address."""
    yield from _component("kafka", stack_paths)


@pytest.fixture(scope="session")
def triton(stack_paths: StackPaths) -> Iterator[Any]:
    """The running Triton server (`remed_stack.triton.Triton`) with remed_planner loaded."""
    yield from _component("triton", stack_paths)


@pytest.fixture(scope="session")
def lab(stack_paths: StackPaths) -> Iterator[Any]:
    """The running lab hosts (`remed_stack.lab.LabHosts`); `.status()` has inventory and keys."""
    yield from _component("lab", stack_paths)
