"""`extract_playbook()` pulls exactly one playbook out of free model text: fenced ```yaml blocks,
bare YAML, leading or trailing prose, several blocks (the first that is a valid play list)."""

from __future__ import annotations

import re

import yaml

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def is_play_list(doc: object) -> bool:
    return (
        isinstance(doc, list)
        and bool(doc)
        and all(isinstance(p, dict) and "hosts" in p for p in doc)
        and any(isinstance(p.get("tasks"), list) and p["tasks"] for p in doc)
    )


def _parses(text: str) -> bool:
    try:
        return is_play_list(yaml.safe_load(text))
    except yaml.YAMLError:
        return False


def _bare(text: str) -> str:
    """Bare YAML in prose: from the first line that opens a play list, as long as it parses."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("- ") or line.rstrip() in ("---", "-")):
            continue
        body = lines[i + 1 :] if line.rstrip() == "---" else lines[i:]
        # drop trailing prose a line at a time until what is left is a play list
        for end in range(len(body), 0, -1):
            candidate = "\n".join(body[:end]).strip("\n") + "\n"
            if _parses(candidate):
                return candidate
    return ""


def extract_playbook(completion: str) -> str:
    """Exactly one playbook from model output, or "" if there is none."""
    for m in _FENCE.finditer(completion):
        lang, body = m.group(1).lower(), m.group(2)
        if lang not in ("", "yaml", "yml", "ansible"):
            continue
        if _parses(body):
            return body.strip("\n") + "\n"
        inner = _bare(body)
        if inner:
            return inner
    return _bare(completion)
