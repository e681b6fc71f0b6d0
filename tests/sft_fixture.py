"""A tiny dataset in the data builder's shape (trainer/data/<dataset>/: train, validation and
test JSONL plus manifest.json with each file's sha256), for the SFT and promotion tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SERVICES = [
    ("cart", "app", 8081),
    ("catalog", "app", 8082),
    ("nginx", "web", 80),
    ("redis", "db", 6379),
    ("checkout", "app", 8083),
    ("postgresql", "db", 5432),
]


def prompt(service: str, host: str, port: int) -> str:
    return f"Incident: {service} on {host} is down (port {port} refuses). Write the playbook."


def completion(service: str, host: str) -> str:
    return (
        "```yaml\n"
        f"- name: fix service-down of {service} on {host}\n"
        f"  hosts: {host}\n"
        "  become: true\n"
        "  tasks:\n"
        f"    - name: start {service}\n"
        f"      ansible.builtin.command: supervisorctl start {service}\n"
        "```"
    )


def example(i: int, service: str, host: str, port: int) -> dict[str, object]:
    return {
        "id": f"fx-{i:02d}-{service}",
        "prompt": prompt(service, host, port),
        "completion": completion(service, host),
        "turn": "oneshot",
        "family": "terse",
        "category": "service-down",
        "service": service,
        "system": "shop",
        "blind": False,
    }


def write_dataset(root: Path, name: str = "fixture") -> Path:
    """trainer/data-shaped dataset `root/name`: 4 train, 1 validation, 1 test example."""
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    rows = [example(i, *s) for i, s in enumerate(SERVICES)]
    splits = {"train": rows[:4], "validation": rows[4:5], "test": rows[5:]}
    files = {}
    for split, examples in splits.items():
        path = out / f"{split}.jsonl"
        path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in examples))
        files[split] = {
            "examples": len(examples),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    manifest = {"name": name, "files": files, "held_out": {"pairs": ["postgresql/service-down"]}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out
