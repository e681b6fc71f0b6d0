"""Template resolution: substitute the values a playbook gives its own variables, case by case."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from remed_daemon.guard.modules import truthy

_REF = re.compile(
    r"\{\{-?\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\s*['\"]?\w+['\"]?\s*\])*)"
    r"((?:\s*\|\s*(?:quote|string|trim|lower|upper|int|basename|dirname|first|last|"
    r"join\([^)]*\)))*)\s*-?\}\}"
)


def template_refs(node: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for v in node.values():
            out |= template_refs(v)
    elif isinstance(node, list):
        for v in node:
            out |= template_refs(v)
    elif isinstance(node, str):
        out |= {m.group(0) for m in _REF.finditer(node)}
    return out


def resolve_ref(ref: str, defs: Mapping[str, list[Any]], unknown: object) -> list[str] | None:
    m = _REF.fullmatch(ref)
    if m is None:
        return None
    path = re.findall(r"[A-Za-z_]\w*|\[\s*['\"]?(\w+)['\"]?\s*\]", m.group(1))
    parts = re.split(r"\.|\[", m.group(1))
    parts = [p.strip("]'\" ") for p in parts]
    del path
    base = parts[0]
    if base not in defs:
        return None
    out: list[str] = []
    for value in defs[base]:
        if isinstance(value, CmdOutput):
            out.append(str(value))
            continue
        for attr in parts[1:]:
            if isinstance(value, dict) and attr in value:
                value = value[attr]
            elif isinstance(value, list) and attr.isdigit() and int(attr) < len(value):
                value = value[int(attr)]
            else:
                return None
        if value is unknown or isinstance(value, dict | list) or value is None:
            return None
        text = str(value)
        filters = m.group(2)
        if "basename" in filters:
            text = text.rsplit("/", 1)[-1]
        if "quote" in filters and not re.fullmatch(r"[\w@%+=:,./-]+", text):
            text = "'" + text.replace("'", "'\"'\"'") + "'"
        out.append(text)
    return sorted(set(out)) or None


class CmdOutput(str):
    """A registered PID lookup's output, substituted as `$(command)` so that `kill` sees it."""


@dataclass(frozen=True)
class FindResult:
    """A registered `find`: the files it can return, as globs (`/tmp/*.tmp`)."""

    globs: tuple[str, ...]


def registered_value(task: Mapping[str, Any]) -> CmdOutput | FindResult | None:
    for key in ("find", "ansible.builtin.find", "ansible.legacy.find"):
        args = task.get(key)
        if isinstance(args, dict):
            paths = args.get("paths", args.get("path", args.get("name")))
            pats = args.get("patterns", args.get("pattern", "*"))
            paths = paths if isinstance(paths, list) else str(paths).split(",")
            pats = pats if isinstance(pats, list) else str(pats).split(",")
            if truthy(args.get("recurse", False)) or truthy(args.get("use_regex", False)):
                pats = ["*"]
            if args.get("file_type") in ("directory", "any", "link"):
                pats = ["*"]
            return FindResult(
                tuple(f"{str(p).rstrip('/')}/{str(q).strip()}" for p in paths for q in pats)
            )
    for key in ("command", "shell", "ansible.builtin.command", "ansible.builtin.shell",
                "ansible.legacy.command", "ansible.legacy.shell"):  # fmt: skip
        cmd = task.get(key)
        if isinstance(cmd, dict):
            cmd = cmd.get("cmd")
        if isinstance(cmd, str) and re.fullmatch(r"\s*(pgrep|pidof)\s[^;|&$`<>(){}]*", cmd):
            return CmdOutput(f"$({cmd.strip()})")
    return None


def substitute(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values) for v in node]
    if isinstance(node, str):
        for ref, value in values.items():
            node = node.replace(ref, value)
        return node
    return node


def parse_free_form(text: str, module: str) -> dict[str, Any]:
    """`command`/`shell` free form: the command plus Ansible's own key=value options."""
    from ansible.parsing.splitter import parse_kv

    try:
        args = dict(parse_kv(text, check_raw=True))
    except Exception:
        return {"_raw_params": text}
    return args


