"""Run a playbook with ansible-runner: in a worker thread, cancellable, with one OpenTelemetry
span per task per host and redacted per-task results.

ansible-runner installs its own SIGTERM handler when it runs on the main thread, so it always
runs on a worker thread here and stops through `cancel_callback` (polled about once a second):
a cancelled or timed-out run is waited for, so "cancelled" means nothing is still running.
`check=True` runs `--check --diff` and collects the diff (what a medium-risk plan would change).
Host keys are always checked (`StrictHostKeyChecking=yes`).

ansible-playbook runs hermetically (`remed_daemon.agents.ansible_env`): a remed-owned empty
`ansible.cfg`, `ANSIBLE_HOME` and `ANSIBLE_LOCAL_TEMP` under the run's private directory
(`RUN_DIR/ansible/`), and none of the daemon's inherited `ANSIBLE_*` variables, so a
`~/.ansible.cfg` or `/etc/ansible/ansible.cfg` cannot change the user, the ssh arguments or the
Jinja environment a playbook the guard judged runs with. ansible-runner seeds its child's
environment from `os.environ`; the inherited settings are removed from what it built, before it
starts the child, keeping only its own (its event callback and fact cache) and remed's.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace

from remed_daemon.agents import ansible_env
from remed_daemon.agents.redact import scrub
from remed_daemon.errors import ExecutionError
from remed_daemon.remediation import TaskResult

MAX_MSG_CHARS = 2000
MAX_DIFF_CHARS = 60_000
_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
# What ansible-runner sets in its child's environment itself: its event callback (how remed
# gets per-task results) and its fact cache. Every other ANSIBLE_* variable there is remed's or
# inherited, and the inherited ones are dropped.
_RUNNER_OWN = frozenset(
    {"ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACK_PLUGINS", "ANSIBLE_CACHE_PLUGIN",
     "ANSIBLE_CACHE_PLUGIN_CONNECTION"}
)  # fmt: skip


@dataclass(frozen=True)
class RunnerSettings:
    inventory: str
    ssh_private_key: str = ""
    ssh_user: str = ""
    known_hosts: str = ""
    timeout_s: float = 600.0


@dataclass
class PlaybookRun:
    status: str  # successful | failed | timeout | canceled
    tasks: list[TaskResult] = field(default_factory=list)
    diff: str = ""

    @property
    def failed_tasks(self) -> list[TaskResult]:
        return [t for t in self.tasks if t.failed or t.unreachable]


def _message(res: Mapping[str, Any]) -> str:
    parts = []
    for key in ("msg", "stderr", "stdout", "module_stderr"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
    return scrub(" | ".join(parts), MAX_MSG_CHARS)


def _diff_text(diff: object) -> str:
    items = diff if isinstance(diff, list) else [diff]
    out: list[str] = []
    for d in items:
        if not isinstance(d, Mapping):
            continue
        if isinstance(d.get("prepared"), str):
            out.append(d["prepared"])
            continue
        before, after = d.get("before"), d.get("after")
        if isinstance(before, str) and isinstance(after, str):
            out.extend(
                difflib.unified_diff(
                    before.splitlines(),
                    after.splitlines(),
                    fromfile=f"before: {d.get('before_header', '')}",
                    tofile=f"after: {d.get('after_header', '')}",
                    lineterm="",
                )
            )
        elif before is not None or after is not None:
            out.append(f"{d.get('before_header', '')}: {before!r} → {after!r}")
    return "\n".join(out)


def ansible_path() -> str:
    """PATH for ansible-runner's child: this interpreter's bin directory first, so the
    `ansible-playbook` of remed's own environment runs even when the venv is not activated
    (systemd runs `.venv/bin/remed` directly)."""
    path = os.environ.get("PATH", os.defpath)
    beside = Path(sys.executable).parent
    if (beside / "ansible-playbook").exists():
        return f"{beside}{os.pathsep}{path}"
    if shutil.which("ansible-playbook", path=path) is None:
        raise ExecutionError("ansible-playbook not found: install ansible-core next to remed")
    return path


def runner_envvars(settings: RunnerSettings, private_dir: Path, control_dir: str) -> dict[str, str]:
    """The variables remed gives ansible-runner for one run: the hermetic ansible-core settings
    of `private_dir`, host-key checking, remed's ssh arguments, PATH."""
    ssh_args = "-o StrictHostKeyChecking=yes"
    if settings.known_hosts:
        ssh_args += f" -o UserKnownHostsFile={settings.known_hosts}"
    return {
        **ansible_env.settings(private_dir),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": ssh_args,
        # Only used when an inventory's ansible_ssh_args turns ControlPersist on: a socket path
        # must stay under ~100 bytes, which a directory under the state dir may not.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir,
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # Blank, so ansible-runner's own callback is the only one: it appends its directory to
        # an inherited ANSIBLE_CALLBACK_PLUGINS, and forwards events to an inherited
        # ANSIBLE_STDOUT_CALLBACK (as ORIGINAL_STDOUT_CALLBACK).
        "ANSIBLE_CALLBACK_PLUGINS": "",
        "ANSIBLE_STDOUT_CALLBACK": "",
        "PATH": ansible_path(),
    }


def hermetic_env(built: Mapping[str, str], envvars: Mapping[str, str]) -> dict[str, str]:
    """The environment ansible-runner built (`os.environ`, then `envvars`, then its own
    settings) without the inherited `ANSIBLE_*` settings; remed's `envvars` win."""
    env = {
        k: v
        for k, v in built.items()
        if k != "ORIGINAL_STDOUT_CALLBACK"
        and (not ansible_env.inherited(k) or k in envvars or k in _RUNNER_OWN)
    }
    env.update({k: v for k, v in envvars.items() if k not in _RUNNER_OWN})
    return env


async def run_playbook(
    settings: RunnerSettings,
    playbook: str,
    *,
    run_dir: Path,
    hosts: Sequence[str],
    extravars: Mapping[str, Any],
    tracer: trace.Tracer,
    cancel: threading.Event,
    check: bool = False,
) -> PlaybookRun:
    """Apply (or `--check --diff`) `playbook` on `hosts` only (the incident's); spans go under
    the current span."""
    import ansible_runner.interface

    project = run_dir / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "remed.yml").write_text(playbook)
    run = PlaybookRun(status="")
    diffs: list[str] = []
    parent = trace.get_current_span().get_span_context()
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    prefix = "check task" if check else "task"

    def on_event(event: dict[str, Any]) -> bool:
        kind = _EVENTS.get(event.get("event", ""))
        if kind is None:
            return False
        data = event.get("event_data", {})
        res = data.get("res", {}) if isinstance(data.get("res"), dict) else {}
        if check and res.get("diff"):
            diffs.append(scrub(_diff_text(res["diff"]), MAX_DIFF_CHARS))
        t = TaskResult(
            host=str(data.get("host", "")),
            task=str(data.get("task", "")),
            module=str(data.get("resolved_action") or data.get("task_action", "")),
            changed=bool(res.get("changed", False)),
            failed=kind == "failed" and not data.get("ignore_errors"),
            unreachable=kind == "unreachable",
            skipped=kind == "skipped",
            rc=res.get("rc") if isinstance(res.get("rc"), int) else None,
            duration_ms=float(data.get("duration") or 0.0) * 1000.0,
            msg=_message(res) if kind in ("failed", "unreachable") else "",
        )
        run.tasks.append(t)
        # The event arrives when the task has finished on the host: the span covers the
        # task's own run time, ending now.
        now_ns = time.time_ns()
        span = tracer.start_span(
            f"{prefix} {t.task}",
            context=parent_ctx,
            start_time=now_ns - int(t.duration_ms * 1e6),
            attributes={
                "remed.host": t.host,
                "remed.task": t.task,
                "remed.module": t.module,
                "remed.changed": t.changed,
                "remed.failed": t.failed,
                "remed.rc": -1 if t.rc is None else t.rc,
                "remed.duration_ms": t.duration_ms,
                "remed.check": check,
            },
        )
        if t.failed or t.unreachable:
            span.set_status(trace.StatusCode.ERROR, t.msg[:200])
        span.end(end_time=now_ns)
        return False  # keep runner's artifacts small: events are not written to disk

    cmdline = ["--diff"] if check else []
    if check:
        cmdline.append("--check")
    if settings.ssh_private_key:
        cmdline += ["--private-key", settings.ssh_private_key]
    if settings.ssh_user:
        cmdline += ["--user", settings.ssh_user]
    deadline = time.monotonic() + settings.timeout_s

    def cancelled() -> bool:
        return cancel.is_set() or time.monotonic() > deadline

    def work() -> str:
        with tempfile.TemporaryDirectory(prefix="remed-cp-") as control_dir:
            envvars = runner_envvars(settings, run_dir / "ansible", control_dir)
            r = ansible_runner.interface.init_runner(
                private_data_dir=str(run_dir),
                playbook="remed.yml",
                inventory=str(Path(settings.inventory).resolve()),
                limit=",".join(hosts),
                cmdline=" ".join(cmdline) or None,
                envvars=envvars,
                extravars=dict(extravars),
                event_handler=on_event,
                cancel_callback=cancelled,
                quiet=True,
                json_mode=False,
            )
            r.config.env = hermetic_env(r.config.env, envvars)
            r.run()
            return str(r.status)

    worker = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        status = await asyncio.shield(worker)
    except asyncio.CancelledError:
        # ansible-runner polls cancel_callback about once a second and then stops
        # ansible-playbook; wait for that, so "cancelled" means nothing is still running.
        cancel.set()
        with contextlib.suppress(Exception):
            await worker
        raise
    except Exception as exc:
        raise ExecutionError(f"ansible-runner could not run: {exc}") from exc
    if status == "canceled" and not cancel.is_set():
        status = "timeout"
    run.status = status
    run.diff = "\n".join(d for d in diffs if d)[:MAX_DIFF_CHARS]
    return run
