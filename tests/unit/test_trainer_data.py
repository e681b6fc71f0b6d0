"""The SFT data builder: its prompts are the daemon's, byte for byte, at every turn kind; the
manifest check catches a leaked test example; renamings move every name together."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from chaos.lab.topology import daemon_topology
from chaos.remediators import ModelRemediator
from chaos.scenario import Scenario
from remed_daemon.agents.execute import RunnerSettings
from remed_daemon.agents.loop import AgentSettings, ThinkRemed, _Run
from remed_daemon.agents.probe import CATALOG, Prober, ProbeResult, requested_probes
from remed_daemon.agents.ssh import HostAccess
from remed_daemon.agents.topology import ServiceFacts
from remed_daemon.journal import Incident, State
from remed_daemon.planner import PlanDraft, PlanRequest, extract_playbook
from trainer import data
from trainer.rename import IDENTITY, Renaming

EXPERT = """\
- name: fix cpu-stress of catalog on app
  hosts: app
  become: true
  gather_facts: false
  tasks:
    - name: stop the hog
      ansible.builtin.command: pkill -KILL -f /tmp/hog-catalog
"""
REFLECTION = "Attempt 1:\nplaybook run successful.\n- verifier: cpu failed: load 3.9 > 1.5"


def _probe(name: str, facts: ServiceFacts) -> ProbeResult:
    return ProbeResult(name, facts.host, 0, f"{name} output for {facts.name} on {facts.host}")


class FixedProber(Prober):
    """The daemon's prober with the SSH round trip replaced by recorded output."""

    def __init__(self) -> None:
        super().__init__(HostAccess(""))

    async def run(self, names: Iterable[str], facts: ServiceFacts) -> list[ProbeResult]:
        return [
            _probe(n, facts) if n in CATALOG
            else ProbeResult(n, facts.host, None, "refused", refused=True)
            for n in names
        ]


class Capture:
    name = "capture"

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    async def plan(self, request: PlanRequest) -> PlanDraft:
        self.prompts.append(request.prompt())
        answer = self.answers[min(len(self.prompts), len(self.answers)) - 1]
        return PlanDraft(
            playbook=extract_playbook(answer), planner=self.name, completion=answer,
            probe_requests=tuple(requested_probes(answer)),
        )  # fmt: skip


def _record(category: str = "cpu-stress", service: str = "catalog") -> dict[str, Any]:
    facts = daemon_topology()[service]
    return {
        "scenario": {
            "id": f"t-{category}-{service}", "category": category,
            "target": {"host": facts.host, "service": service},
        },
        "facts": dataclasses.asdict(facts),
        "facts_text": facts.describe(),
        "probes": {n: _probe(n, facts).as_text() for n in CATALOG},
        "naive": {"reflection": REFLECTION, "verification": {"passed": False, "checks": []}},
        "expert": EXPERT,
        "report": {"summary": f"High CPU on {facts.host}: {service} latency degraded"},
        "confirm_evidence": ["load 3.9"],
        "source": "fixture#t",
    }


def _loop_prompts(report: dict[str, Any], facts: ServiceFacts, answers: Sequence[str],
                  previous: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """What the ThinkRemed loop itself sends the planner for this incident (first plan, and
    the plan after probes when the planner asks for some)."""
    planner = Capture(answers)
    settings = AgentSettings(runner=RunnerSettings(inventory=""), state_dir=Path("/tmp"),
                             reach_hosts=True)  # fmt: skip
    agent = ThinkRemed(settings, planners={"capture": planner}, default_planner="capture",
                       hosts=HostAccess(""), prober=FixedProber())  # fmt: skip
    incident = Incident(
        id="i1", idem_key="k", source="test", target=f"{facts.name}@{facts.host}",
        state=State.PLANNING, report=report,
        traceparent="", kafka_partition=None, kafka_offset=None, reason="", created_at=0.0,
        updated_at=0.0, started_at=None, finished_at=None,
    )  # fmt: skip
    ctx = types.SimpleNamespace(tracer=trace.get_tracer("test"), incident=incident)
    category = str(report.get("category") or "")
    run = _Run(agent, ctx, incident, facts, category, planner)  # type: ignore[arg-type]

    async def go() -> None:
        run.probes = await agent.prober.for_category(category, facts)
        run.evidence = list(previous)
        await run.plan(1 + len(previous))

    asyncio.run(go())
    return planner.prompts


def _examples(record: dict[str, Any], renaming: Renaming = IDENTITY) -> list[data.Example]:
    return list(data.examples_for(record, renaming, random.Random(3), data.FAMILIES))


def test_every_turn_kind_is_the_loops_prompt_byte_for_byte() -> None:
    record = _record()
    facts = daemon_topology()["catalog"]
    by_turn: dict[str, list[data.Example]] = {}
    for e in _examples(record):
        by_turn.setdefault(e.turn, []).append(e)
    assert {"oneshot", "probed", "probe-request", "after-probes", "replan"} <= set(by_turn)

    for e in by_turn["probed"]:
        assert _loop_prompts(e.report, facts, [e.completion]) == [e.prompt]
    ask, after = by_turn["probe-request"][0], by_turn["after-probes"][0]
    assert ask.report == after.report and "category" not in ask.report
    # the loop asks, runs the requested probes, asks again: both prompts are the examples'
    assert _loop_prompts(ask.report, facts, [ask.completion, after.completion]) == [
        ask.prompt, after.prompt
    ]
    replan = by_turn["replan"][0]
    assert _loop_prompts(replan.report, facts, [replan.completion], [REFLECTION]) == [
        replan.prompt
    ]
    oneshot = by_turn["oneshot"][0]
    scenario = Scenario.parse(record["scenario"])
    assert ModelRemediator.request(scenario, oneshot.report).prompt() == oneshot.prompt


def test_a_renaming_moves_every_name_together() -> None:
    record = _record()
    renaming = Renaming.draw("train", random.Random(1))
    for e in _examples(record, renaming):
        for text in (e.prompt, e.completion, e.expert):
            assert "catalog" not in text and "/etc/shop" not in text
            assert "8081" not in text
        assert renaming.words["catalog"] in e.prompt
    expert = next(e.expert for e in _examples(record, renaming))
    assert f"hosts: {renaming.words['app']}" in expert


def _dataset(tmp_path: Path) -> Path:
    evidence = tmp_path / "evidence" / "fixture.jsonl"
    cases = evidence.parent / "runs" / "fixture" / "cases"
    cases.mkdir(parents=True)
    lines = []
    for category, service in (("cpu-stress", "catalog"), ("cpu-stress", "postgresql"),
                              ("cpu-stress", "cart"), ("memory-stress", "checkout")):  # fmt: skip
        record = _record(category, service)
        lines.append(json.dumps(record))
        sid = record["scenario"]["id"]
        (cases / f"{sid}.json").write_text(json.dumps({"recovered": True}))
    evidence.write_text("\n".join(lines) + "\n")
    return data.write_dataset("fx", [evidence], out_root=tmp_path / "out")


def test_the_manifest_proves_the_split_and_catches_a_leak(tmp_path: Path) -> None:
    out = _dataset(tmp_path)
    manifest = data.check_manifest(out)
    assert manifest["files"]["test"]["examples"] > 0
    test = data.read_split(out, "test")
    assert {e["family"] for e in data.read_split(out, "train")}.isdisjoint({"chat"})
    # a held-out pair, (postgresql, cpu-stress), is wholly in test
    assert any(e["service"] == "postgresql" for e in test)
    assert not any(e["service"] == "postgresql" for e in data.read_split(out, "train"))

    leaked = out / "train.jsonl"
    leaked.write_text(leaked.read_text() + json.dumps(test[0]) + "\n")
    with pytest.raises(data.DataError, match="hash"):
        data.check_manifest(out)
    doc = json.loads((out / "manifest.json").read_text())
    doc["files"]["train"]["sha256"] = data._sha(leaked)
    (out / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(data.DataError, match="test prompt"):
        data.check_manifest(out)
