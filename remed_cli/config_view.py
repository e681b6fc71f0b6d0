"""The effective values of a daemon config, for `remed config check FILE`: every key with the
value `remed serve` would run with and where it came from (the file, a `REMED_*` variable, a
`REMED_*_FILE` secret file, or the default), secrets masked."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remed_daemon.config import ENV_PREFIX, SECTIONS, Config, Secret

MASK = "***"


def _shown(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK if value else ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _origin(section: str, key: str, doc: Mapping[str, Any], env: Mapping[str, str]) -> str:
    var = f"{ENV_PREFIX}{section + '_' if section else ''}{key}".upper()
    if var in env:
        return f"${var}"
    if f"{var}_FILE" in env:
        return f"${var}_FILE"
    table = doc.get(section, {}) if section else doc
    return "file" if isinstance(table, dict) and key in table else "default"


def effective(
    cfg: Config, path: Path | None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """{"<section>.<key>" or "<key>": {"value", "from"}} for every key of `cfg`."""
    env = os.environ if env is None else env
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            doc = {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name in SECTIONS:
            continue
        out[f.name] = {"value": _shown(getattr(cfg, f.name)), "from": _origin("", f.name, doc, env)}
    for name in SECTIONS:
        section = getattr(cfg, name)
        for f in dataclasses.fields(section):
            out[f"{name}.{f.name}"] = {
                "value": _shown(getattr(section, f.name)),
                "from": _origin(name, f.name, doc, env),
            }
    return out


def format_effective(values: Mapping[str, Mapping[str, Any]]) -> str:
    width = max(len(k) for k in values)
    lines = []
    for key, v in values.items():
        shown = v["value"]
        text = repr(shown) if isinstance(shown, str) else str(shown).lower() if isinstance(
            shown, bool) else str(shown)  # fmt: skip
        mark = "" if v["from"] == "default" else f"   ({v['from']})"
        lines.append(f"  {key.ljust(width)} = {text}{mark}")
    return "\n".join(lines)
