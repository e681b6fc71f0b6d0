"""`remed stack up|down|status`: the local Kafka, Triton and lab hosts as one unit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from remed_stack.paths import StackPaths
from remed_stack.procs import StackError

COMPONENT_NAMES = ("kafka", "lab", "triton")


class Component(Protocol):
    def up(self) -> None: ...
    def down(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


def make_component(name: str, paths: StackPaths) -> Component:
    # Imported here so that `remed stack status` does not pay for what it does not touch.
    if name == "kafka":
        from remed_stack.kafka import Kafka

        return Kafka(paths)
    if name == "triton":
        from remed_stack.triton import Triton

        return Triton(paths)
    if name == "lab":
        from remed_stack.lab import LabHosts

        return LabHosts(paths)
    raise StackError(f"unknown stack component {name!r}; choose from {', '.join(COMPONENT_NAMES)}")


def up(paths: StackPaths, only: Sequence[str] = COMPONENT_NAMES) -> None:
    """Bring components up side by side; each waits for its own real readiness."""
    components = {name: make_component(name, paths) for name in only}
    if not components:
        return
    with ThreadPoolExecutor(max_workers=len(components)) as pool:
        futures = {name: pool.submit(c.up) for name, c in components.items()}
    failures = [f"{name}: {f.exception()}" for name, f in futures.items() if f.exception()]
    if failures:
        raise StackError("stack up failed:\n  " + "\n  ".join(failures))


def down(paths: StackPaths, only: Sequence[str] = COMPONENT_NAMES) -> None:
    errors = []
    for name in reversed(list(only)):
        try:
            make_component(name, paths).down()
        except Exception as exc:  # keep stopping the rest; report all at the end
            errors.append(f"{name}: {exc}")
    if errors:
        raise StackError("stack down left errors:\n  " + "\n  ".join(errors))


def status(paths: StackPaths) -> dict[str, Any]:
    """The contract shape of `remed stack status --json` (ARCHITECTURE.md)."""
    report: dict[str, Any] = {
        "kafka": make_component("kafka", paths).status(),
        "triton": make_component("triton", paths).status(),
    }
    report.update(make_component("lab", paths).status())
    return report


def format_status(report: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "up  " if ok else "DOWN"

    lines = [
        f"{mark(report['kafka']['ok'])} kafka   {report['kafka'].get('bootstrap')}",
        f"{mark(report['triton']['ok'])} triton  {report['triton'].get('http')} "
        f"(grpc {report['triton'].get('grpc')})",
    ]
    for host in report.get("hosts", []):
        lines.append(f"{mark(host['ok'])} host    {host['name']} {host['address']}")
    lines.append(f"inventory   {report.get('inventory')}")
    lines.append(f"ssh         {report.get('ssh_user')} -i {report.get('ssh_key')}")
    lines.append(f"known_hosts {report.get('known_hosts')}")
    return "\n".join(lines)


def all_ok(report: dict[str, Any]) -> bool:
    hosts = report.get("hosts", [])
    return bool(
        report["kafka"]["ok"] and report["triton"]["ok"] and hosts and all(h["ok"] for h in hosts)
    )


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
