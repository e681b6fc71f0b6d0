"""Probe, redaction, SSH and snapshot/undo on the real lab hosts (asyncssh, host keys checked)."""

from __future__ import annotations

import hashlib
import os
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest

from remed_daemon.agents.probe import Prober
from remed_daemon.agents.snapshot import Snapshot
from remed_daemon.agents.ssh import HostAccess, HostUnreachable
from remed_daemon.agents.topology import ServiceFacts

pytestmark = pytest.mark.integration

HOST = "db"


def access(lab: Any, **kw: Any) -> HostAccess:
    st = lab.status()
    return HostAccess(
        st["inventory"], user=st["ssh_user"], key=st["ssh_key"],
        known_hosts=kw.pop("known_hosts", st["known_hosts"]), **kw,
    )  # fmt: skip


async def sh(hosts: HostAccess, command: str, stdin: bytes | None = None) -> str:
    res = await hosts.run(HOST, command, timeout_s=20, stdin=stdin)
    assert res.exit_status == 0, (command, res.err)
    return res.text


async def test_probe_allowlist_refuses_and_output_is_redacted(lab: Any) -> None:
    hosts = access(lab)
    base = f"/srv/remed-probe-{uuid.uuid4().hex[:8]}"
    marker = f"/tmp/remed-pwned-{uuid.uuid4().hex[:8]}"
    conf = f"{base}/app.conf"
    secret_conf = (
        "[db]\nurl = postgresql://shop:hunter2-secret@db/shop\npassword = hunter2-secret\n"
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAB3NzaSECRETKEYBODY\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    try:
        await sh(hosts, f"sudo -n mkdir -p {base} && sudo -n tee {conf} >/dev/null",
                 secret_conf.encode())  # fmt: skip
        facts = ServiceFacts(name="remedprobe", host=HOST, address=await hosts.address(HOST),
                             program="remedprobe", config=conf, log=conf)  # fmt: skip
        prober = Prober(hosts, timeout_s=10, max_output_chars=500)
        results = await prober.requested(
            [f"touch {marker}", "config_show", "$(touch /tmp/x)", "log_errors"], facts
        )
        by_name = {r.name: r for r in results}
        assert by_name[f"touch {marker}"].refused
        assert by_name["$(touch /tmp/x)"].refused
        assert "allowlist" in by_name[f"touch {marker}"].output
        shown = by_name["config_show"]
        assert not shown.refused and shown.exit_status == 0
        assert "[db]" in shown.output
        assert "hunter2-secret" not in shown.output
        assert "SECRETKEYBODY" not in shown.output
        assert len(shown.output) <= 500
        # the refused "probe" never ran
        gone = await hosts.run(HOST, f"test -e {marker}", timeout_s=10)
        assert gone.exit_status == 1
        # the catalog for a category runs every probe, read-only, within the time limit
        catalog = await prober.for_category("config-error", facts)
        assert [r.name for r in catalog] == ["service_status", "log_errors", "config_show"]
        assert all(not r.refused and not r.timed_out for r in catalog)
        # connections are reused: one pooled connection served all of it
        assert len(hosts._pool) == 1
    finally:
        await hosts.run(HOST, f"sudo -n rm -rf -- {base}", timeout_s=10)
        await hosts.close()


async def test_host_keys_are_always_verified(lab: Any, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    hosts = access(lab, known_hosts=str(empty), connect_timeout_s=5)
    with pytest.raises(HostUnreachable, match="known_hosts"):
        await hosts.run(HOST, "true", timeout_s=5)
    await hosts.close()


async def test_snapshot_and_undo_restore_content_mode_owner(lab: Any, tmp_path: Path) -> None:
    hosts = access(lab)
    base = f"/srv/remed-snap-{uuid.uuid4().hex[:8]}"
    path, created = f"{base}/conf d/app.conf", f"{base}/new.conf"
    original = os.urandom(3000) + b"\x00tail without newline"
    qpath = shlex.quote(path)
    try:
        await sh(hosts, f"sudo -n mkdir -p {shlex.quote(base + '/conf d')} && "
                 f"sudo -n tee {qpath} >/dev/null && sudo -n chown 0:995 {qpath} && "
                 f"sudo -n chmod 0640 {qpath}", original)  # fmt: skip
        snap = Snapshot(hosts, tmp_path / "snap")
        errors = await snap.take(HOST, [path, created, "relative/path"], [])
        assert errors == [f"{HOST}:'relative/path': not an absolute, plain path; not saved"]
        assert oct((tmp_path / "snap").stat().st_mode & 0o777) == "0o700"
        # what a playbook might do: rewrite, loosen, re-own, add a file
        await sh(hosts, f"echo broken | sudo -n tee {qpath} >/dev/null && "
                 f"sudo -n chmod 0777 {qpath} && sudo -n chown remedops:remedops {qpath} && "
                 f"echo x | sudo -n tee {created} >/dev/null")  # fmt: skip
        undo = await snap.undo()
        assert undo["performed"] and undo["errors"] == [f"{HOST}:'relative/path': not an "
                                                         "absolute, plain path; not saved"]
        assert {(r["kind"], r["name"]) for r in undo["restored"]} == {
            ("file", path), ("file", created)
        }
        stat = await sh(hosts, f"sudo -n stat -c '%a %u %g' -- {qpath}")
        assert stat.split() == ["640", "0", "995"]
        back = await hosts.run(HOST, f"sudo -n cat -- {qpath}", timeout_s=10)
        assert hashlib.sha256(back.stdout).hexdigest() == hashlib.sha256(original).hexdigest()
        assert back.stdout == original
        assert (await hosts.run(HOST, f"test -e {created}", timeout_s=10)).exit_status == 1
    finally:
        await hosts.run(HOST, f"sudo -n rm -rf -- {shlex.quote(base)}", timeout_s=10)
        await hosts.close()
