"""What the webhook tests share: firing an alert into a real Alertmanager, reading the daemon's
journal from outside, and waiting for either."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `cond` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def post_alert(
    am_port: int, labels: dict[str, str], annotations: dict[str, str], *, ends: bool = False
) -> None:
    """Fire (or, with `ends`, resolve) one alert through Alertmanager's v2 API on loopback."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    alert: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": now}
    if ends:
        alert["endsAt"] = now
    req = urllib.request.Request(
        f"http://127.0.0.1:{am_port}/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def journal_incidents(state: Path) -> list[tuple[str, str, str]]:
    """(source, target, state) of every incident in the daemon's journal, read-only."""
    db = state / "journal.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT source, target, state FROM incidents").fetchall()
