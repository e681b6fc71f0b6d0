"""Record real evidence for the SFT data: every catalog probe's output and the verifier's
evidence, taken from the live lab with each fault injected and confirmed.

`remed train data record` runs a recording suite through `remed bench`'s case machinery
(steady state → inject → confirm → *record* → cleanup → reset), with a remediator that, while
the fault is live:

1. runs every probe of the daemon's catalog (`remed_daemon.agents.probe.CATALOG`) through the
   daemon's own `Prober` with the daemon's topology facts and default limits, so a recorded
   output is exactly what the ThinkRemed loop would put into a prompt;
2. runs the naive runbook fix (`chaos.playbooks.rules_playbook`: restart the service) with the
   daemon's executor and verifies with the daemon's verifier; `reflect()` of that attempt is the
   evidence a re-plan prompt carries, taken as the loop takes it;
3. applies the expert's playbook so the case ends recovered (the bench verifies it).

One JSON line per case goes to `trainer/data/evidence/<name>.jsonl`, with where it came from
(scenario, fault parameters, lab host, UTC time, commit). Nothing here is invented: the data
builder (`trainer/data.py`) only selects, rephrases and renames what was recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from chaos.faults import Fault
from chaos.lab.hosts import Lab
from chaos.playbooks import oracle_playbook, rules_playbook
from chaos.remediators import Remediation, _play_host, apply_guarded, target_facts
from chaos.scenario import Scenario, load_suite
from remed_daemon.agents.execute import RunnerSettings, run_playbook
from remed_daemon.agents.loop import reflect
from remed_daemon.agents.probe import CATALOG, Prober
from remed_daemon.agents.ssh import HostAccess
from remed_daemon.agents.topology import ServiceFacts
from remed_daemon.agents.verify import HostVerifier
from remed_daemon.config import AgentsConfig
from remed_daemon.guard import check_playbook

EVIDENCE_DIR = Path(__file__).resolve().parent / "data" / "evidence"
SSH_USER = "remedops"
# The naive attempt's verification: long enough for a restarted service to come up, short
# enough that a recording suite of ~60 cases stays under twenty minutes.
NAIVE_VERIFY_WINDOW_S = 8.0


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class EvidenceRecorder:
    """A `remed bench` remediator that records what the loop would see, then fixes the fault
    the expert's way."""

    name = "recorder"

    def __init__(self, lab: Lab, out: Path) -> None:
        self.lab = lab
        self.out = out
        self.agents = AgentsConfig()
        self.commit = _commit()

    def _hosts(self) -> HostAccess:
        return HostAccess(
            str(self.lab.inventory), user=SSH_USER, key=str(self.lab.key),
            known_hosts=str(self.lab.known_hosts),
            connect_timeout_s=self.agents.ssh_connect_timeout_s,
        )  # fmt: skip

    async def _observe(self, facts: ServiceFacts, category: str) -> dict[str, Any]:
        hosts = self._hosts()
        try:
            prober = Prober(
                hosts, timeout_s=self.agents.probe_timeout_s,
                max_output_chars=self.agents.probe_output_max_chars,
            )  # fmt: skip
            probes = await prober.run(list(CATALOG), facts)
            return {p.name: p.as_text() for p in probes}
        finally:
            await hosts.close()

    async def _naive_attempt(
        self, scenario: Scenario, facts: ServiceFacts
    ) -> dict[str, Any]:
        from opentelemetry import trace

        playbook = rules_playbook(scenario.category, scenario.target.host, facts.name)
        verdict = check_playbook(playbook, facts.incident_hosts)
        if not verdict.allowed or verdict.risk == "high":
            return {"playbook": playbook, "skipped": f"guard: {verdict.risk}"}
        hosts = self._hosts()
        try:
            settings = RunnerSettings(
                inventory=str(self.lab.inventory), ssh_private_key=str(self.lab.key),
                ssh_user=SSH_USER, known_hosts=str(self.lab.known_hosts), timeout_s=120,
            )  # fmt: skip
            with tempfile.TemporaryDirectory(dir=self.lab.chaos_dir) as run_dir:
                run = await run_playbook(
                    settings, playbook, run_dir=Path(run_dir), hosts=facts.incident_hosts,
                    extravars={"remed_host": facts.host, "remed_service": facts.name},
                    tracer=trace.get_tracer("remed.trainer.record"), cancel=threading.Event(),
                )  # fmt: skip
            verifier = HostVerifier(
                hosts, window_s=NAIVE_VERIFY_WINDOW_S, stable_s=self.agents.verify_stable_s,
                interval_s=self.agents.verify_interval_s, timeout_s=self.agents.verify_timeout_s,
            )  # fmt: skip
            verification = await verifier.verify(facts, scenario.category)
        finally:
            await hosts.close()
        return {
            "playbook": playbook,
            "status": run.status,
            "verification": verification,
            "reflection": reflect(1, run, verification),
        }

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        facts = target_facts(scenario)
        record: dict[str, Any] = {
            "scenario": scenario.as_dict(),
            "fault": {
                "class": type(fault).__name__, "params": fault.params(), "summary": fault.summary
            },
            "facts": dataclasses.asdict(facts),
            "facts_text": facts.describe(),
            "report": report,
            "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": self.commit,
            "host": facts.host,
        }
        record["probes"] = asyncio.run(self._observe(facts, scenario.category))
        record["naive"] = asyncio.run(self._naive_attempt(scenario, facts))
        playbook = oracle_playbook(
            scenario.category, _play_host(scenario), scenario.target.service, fault.params()
        )
        record["expert"] = playbook
        result = Remediation(attempts=1)
        result.playbooks.append(playbook)
        apply_guarded(self.lab, playbook, facts, result, approve_high_risk="recorder (expert)")
        record["expert_status"] = result.status
        with self.out.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        return result


def recording_scenarios(seeds: int = 1, *, variants: bool = False) -> list[Scenario]:
    """Every (service, category) pair the shop's catalog applies to, `seeds` times; with
    `variants`, each recording draws the fault's names (hog, table, dumper, ...) from its own
    seed, so the probes show names the expert read from the fault."""
    from chaos.scenarios.make_suites import HOST, TARGETS

    out = []
    for category, targets in TARGETS.items():
        for target in targets:
            service, variant = target if isinstance(target, tuple) else (target, None)
            for seed in range(seeds):
                tag = f"-{variant}" if variant else ""
                kind = "v" if variants else ""
                data: dict[str, Any] = {
                    "id": f"rec-{category}-{service}{tag}-{kind}{seed + 1:02d}",
                    "category": category,
                    "target": {"host": HOST[service], "service": service},
                }
                if variant:
                    data["fault"] = {"variant": variant}
                if variants:
                    data["seed"] = data["id"]
                out.append(Scenario.parse(data, "trainer.record"))
    return out


def record(
    name: str, *, suite: str = "", seeds: int = 1, variants: bool = False,
    out_dir: Path = EVIDENCE_DIR,
) -> Path:  # fmt: skip
    """Record a suite (default: every pair of the catalog) into `out_dir/<name>.jsonl`. Cases
    already recorded in that file are skipped, so an interrupted recording resumes."""
    from chaos import bench

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.jsonl"
    done: set[str] = set()
    if out.exists():
        for line in out.read_text().splitlines():
            try:
                done.add(json.loads(line)["scenario"]["id"])
            except (ValueError, KeyError):
                continue  # a line cut by a crash: that case is recorded again
    scenarios = load_suite(suite) if suite else recording_scenarios(seeds, variants=variants)
    todo = [s for s in scenarios if s.id not in done]
    lab = Lab.from_paths()
    recorder = EvidenceRecorder(lab, out)
    runs = out_dir / "runs" / name
    bench.run(todo, recorder, runs, suite=f"record-{name}", lab=lab)
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
