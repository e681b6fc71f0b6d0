"""The remediators `remed bench` compares, and ansible-runner execution of their playbooks.

- oracle: the expert playbook for the category (chaos/playbooks.py), run with ansible-runner.
- rules: the static runbook (restart the alerting service), run with ansible-runner.
- model: one-shot plan from Triton's `remed_planner` (async HTTP client), the ```yaml block
  extracted and run with ansible-runner.
- daemon: the report published on Kafka `remed.diagnoses`; the daemon's outcome awaited on
  `remed.outcomes` (the daemon runs the playbook itself).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from chaos.faults import Fault
from chaos.lab.hosts import Lab
from chaos.playbooks import oracle_playbook, rules_playbook
from chaos.scenario import Scenario

PLAYBOOK_TIMEOUT_S = 60
MODEL_TIMEOUT_S = 120.0
MODEL_MAX_TOKENS = 384
DAEMON_TIMEOUT_S = 180.0
OUTCOMES_TOPIC = "remed.outcomes"
DIAGNOSES_TOPIC = "remed.diagnoses"
YAML_BLOCK = re.compile(r"```(?:yaml|yml)?\s*\n(.*?)```", re.DOTALL)


@dataclass
class Remediation:
    """What a remediator did for one case (goes into the case journal)."""

    playbooks: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    attempts: int = 0
    status: str = ""  # ansible-runner status, or the daemon's outcome status
    error: str | None = None
    outcome: dict[str, Any] | None = None


class Remediator(Protocol):
    name: str

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        ...


def run_playbook(lab: Lab, playbook: str, result: Remediation) -> None:
    """Run one playbook against the lab inventory (host keys checked); events into `result`."""
    import ansible_runner

    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_CONTROL_PATH_DIR": str(lab.chaos_dir / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(lab.chaos_dir / "ansible-tmp"),
    }
    data_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=lab.chaos_dir))
    (data_dir / "project").mkdir()
    (data_dir / "project" / "fix.yml").write_text(playbook)

    def on_event(event: dict[str, Any]) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event", "")
        if kind.startswith("runner_on_") and kind != "runner_on_start":
            res = data.get("res", {}) or {}
            result.events.append({
                "event": kind, "host": data.get("host"), "task": data.get("task"),
                "module": data.get("resolved_action") or data.get("task_action"),
                "changed": bool(res.get("changed")), "failed": kind == "runner_on_failed",
                "rc": res.get("rc"), "duration_s": data.get("duration"),
                "msg": str(res.get("msg") or res.get("stderr") or "")[:500],
            })  # fmt: skip
        return True

    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = env["PATH"]  # ansible-runner looks up ansible-playbook on our PATH
    try:
        runner = ansible_runner.run(
            private_data_dir=str(data_dir), playbook="fix.yml", inventory=str(lab.inventory),
            envvars=env, quiet=True, event_handler=on_event, timeout=PLAYBOOK_TIMEOUT_S,
        )  # fmt: skip
        result.status = str(runner.status)
        if runner.status != "successful":
            result.error = f"ansible-runner {runner.status} (rc {runner.rc})"
            if not result.events:
                result.error += ": " + runner.stdout.read()[-800:]
    finally:
        os.environ["PATH"] = old_path
        shutil.rmtree(data_dir, ignore_errors=True)


def _play_host(scenario: Scenario) -> str:
    if scenario.category == "dependency-down":
        return "db"
    return scenario.target.host


class OracleRemediator:
    name = "oracle"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation(attempts=1)
        playbook = oracle_playbook(
            scenario.category, _play_host(scenario), scenario.target.service, fault.params()
        )
        result.playbooks.append(playbook)
        run_playbook(self.lab, playbook, result)
        return result


class RulesRemediator:
    name = "rules"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation(attempts=1)
        playbook = rules_playbook(
            scenario.category, scenario.target.host, scenario.target.service
        )
        result.playbooks.append(playbook)
        run_playbook(self.lab, playbook, result)
        return result


def extract_playbook(text: str) -> str | None:
    """The first ```yaml block of a completion (or the whole text if it is a bare play list)."""
    match = YAML_BLOCK.search(text)
    if match:
        return match.group(1).strip() + "\n"
    if text.lstrip().startswith("- "):
        return text.strip() + "\n"
    return None


class ModelRemediator:
    """One-shot generation from `remed_planner` on Triton."""

    name = "model"

    def __init__(self, lab: Lab, triton_http: str) -> None:
        self.lab = lab
        self.url = triton_http.removeprefix("http://")

    async def generate(
        self, prompt: str, max_tokens: int = MODEL_MAX_TOKENS
    ) -> tuple[str, int, int]:
        import numpy as np
        import tritonclient.http.aio as httpclient

        client = httpclient.InferenceServerClient(self.url, conn_timeout=MODEL_TIMEOUT_S)
        try:
            text = httpclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([prompt.encode()], dtype=object))
            limit = httpclient.InferInput("max_tokens", [1], "INT32")
            limit.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
            async with asyncio.timeout(MODEL_TIMEOUT_S):
                response = await client.infer("remed_planner", [text, limit])
            out = response.as_numpy("text_output")
            completion = out.reshape(-1)[0]
            completion = completion.decode() if isinstance(completion, bytes) else str(completion)
            prompt_tokens = int(response.as_numpy("prompt_tokens").reshape(-1)[0])
            completion_tokens = int(response.as_numpy("completion_tokens").reshape(-1)[0])
            return completion, prompt_tokens, completion_tokens
        finally:
            await client.close()

    @staticmethod
    def prompt(scenario: Scenario, report: dict[str, Any]) -> str:
        from chaos.lab import topology as topo
        from remed_daemon.agents.prompt import build_plan_prompt

        return build_plan_prompt(report, [topo.facts(scenario.target.service)])

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation(attempts=1)
        prompt = self.prompt(scenario, report)
        result.prompts.append(prompt)
        try:
            completion, p_tok, c_tok = asyncio.run(self.generate(prompt))
        except Exception as exc:
            result.error = f"triton: {type(exc).__name__}: {exc}"[:500]
            return result
        result.completions.append(completion)
        result.tokens = {"prompt": p_tok, "completion": c_tok}
        playbook = extract_playbook(completion)
        if playbook is None:
            result.error = "no ```yaml block in the model's answer"
            return result
        result.playbooks.append(playbook)
        run_playbook(self.lab, playbook, result)
        return result


class DaemonRemediator:
    """Publish the report to Kafka; wait for the daemon's outcome for the same report_id."""

    name = "daemon"

    def __init__(
        self, bootstrap: str, planner: str | None = None, timeout_s: float = DAEMON_TIMEOUT_S,
        *, diagnoses_topic: str = DIAGNOSES_TOPIC, outcomes_topic: str = OUTCOMES_TOPIC,
    ) -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.planner = planner
        self.timeout_s = timeout_s
        self.diagnoses_topic = diagnoses_topic
        self.outcomes_topic = outcomes_topic

    async def _roundtrip(self, report: dict[str, Any]) -> dict[str, Any] | None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from remed_daemon.schemas import validate

        validate("diagnosis-report", report)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await producer.start()
        try:
            # Assign every partition and seek to the end before publishing, so the outcome for
            # this report cannot be missed and no older outcome is read.
            partitions = await producer.partitions_for(self.outcomes_topic)
            topic_partitions = [TopicPartition(self.outcomes_topic, p) for p in partitions]
            consumer.assign(topic_partitions)
            await consumer.seek_to_end(*topic_partitions)
            key = f"{report['target']['service']}@{report['target']['host']}"
            # The bench starts the trace, as an upstream detector would: the daemon's spans for
            # this incident, and its outcome, carry this trace id.
            traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
            await producer.send_and_wait(
                self.diagnoses_topic, json.dumps(report).encode(), key=key.encode(),
                headers=[("traceparent", traceparent.encode())],
            )  # fmt: skip
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        try:
                            outcome = json.loads(record.value or b"{}")
                        except ValueError:
                            continue
                        if outcome.get("report_id") == report["report_id"]:
                            return dict(outcome)
            return None
        finally:
            await producer.stop()
            await consumer.stop()

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation()
        report = dict(report, report_id=f"{report['report_id']}-{uuid.uuid4().hex[:8]}")
        if self.planner:
            report["labels"] = {"remed_planner": self.planner}
        try:
            outcome = asyncio.run(self._roundtrip(report))
        except Exception as exc:
            result.error = f"kafka: {type(exc).__name__}: {exc}"[:500]
            return result
        if outcome is None:
            result.error = (
                f"no outcome on remed.outcomes within {self.timeout_s}s: is `remed serve` "
                "running with remediation.mode = 'ansible' on this broker?"
            )
            return result
        result.outcome = outcome
        result.status = str(outcome.get("status", ""))
        attempts = outcome.get("attempts", [])
        result.attempts = len(attempts)
        for attempt in attempts:
            if attempt.get("playbook"):
                result.playbooks.append(str(attempt["playbook"]))
            tokens = attempt.get("tokens") or {}
            result.tokens["prompt"] += int(tokens.get("prompt", 0) or 0)
            result.tokens["completion"] += int(tokens.get("completion", 0) or 0)
        return result


def make_remediator(
    name: str, lab: Lab, planner: str | None = None, timeout_s: float = DAEMON_TIMEOUT_S
) -> Remediator:
    from remed_stack.paths import StackPaths
    from remed_stack.stack import make_component

    if name == "oracle":
        return OracleRemediator(lab)
    if name == "rules":
        return RulesRemediator(lab)
    paths = StackPaths.from_env()
    if name == "model":
        status = make_component("triton", paths).status()
        if not status.get("ok"):
            raise RuntimeError("Triton is not up: run `remed stack up --only triton`")
        return ModelRemediator(lab, str(status["http"]))
    if name == "daemon":
        status = make_component("kafka", paths).status()
        if not status.get("ok"):
            raise RuntimeError("Kafka is not up: run `remed stack up --only kafka`")
        return DaemonRemediator(str(status["bootstrap"]), planner, timeout_s)
    raise ValueError(f"unknown remediator {name!r}: oracle, rules, model or daemon")
