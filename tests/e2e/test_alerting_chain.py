"""The alerting chain as a contract, end to end with the shipped files (deploy/): cart is
stopped on the lab host app → blackbox exporter's probe fails → Prometheus fires
ShopServiceDown (category service-down) → Alertmanager posts it to `remed serve`'s webhook with
the bearer token from its credentials file → remed (ThinkRemed, the oracle planner, so no model
is involved) probes, plans, guards, applies and verifies on the host → the probe passes and the
alert resolves in Prometheus and Alertmanager, whose resolved notification reaches remed → the
outcome is on Kafka. Real Prometheus, Alertmanager, blackbox exporter, Kafka, sshd and Ansible;
1 s scrape and evaluation intervals and the rules' `for:` scaled down keep it to seconds.
The lab is held (`Lab.exclusive`) while the daemon and the chain run: they would remediate
anyone's faults."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from alerting import wait_for
from reports import read_topic

from chaos.faults import Target, make_fault
from chaos.lab import provision
from chaos.lab.hosts import Lab
from remed_stack.alerting_chain import AlertingChain
from remed_stack.kafka import create_private_topics
from remed_stack.lab_daemon import LabDaemon, LabDaemonSettings, write_config

pytestmark = pytest.mark.e2e
WEBHOOK_TOKEN = "alerting-chain-webhook-token"
OPERATOR_TOKEN = "alerting-chain-operator-token"


def metric(url: str, line_start: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def remed_json(config: Path, *argv: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "remed_cli", *argv, "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done
    return json.loads(done.stdout)


def test_fault_to_alert_to_remediation_to_resolution(tmp_path: Path, kafka: Any, lab: Any) -> None:
    topics = asyncio.run(create_private_topics(kafka.bootstrap, "alerting"))
    settings = LabDaemonSettings(
        kafka.bootstrap, topics, WEBHOOK_TOKEN, OPERATOR_TOKEN, planner="oracle"
    )
    config = write_config(tmp_path, settings)
    chaos_lab = Lab.from_paths()
    # The lock first: a daemon behind a live alerting chain remediates whatever fails on the
    # lab, including another holder's injected faults.
    # The shop is brought to its baseline before anything watches it: on a fresh lab its
    # services start there, and a chain already scraping would page remed for each of them.
    with chaos_lab.exclusive("tests/e2e/test_alerting_chain.py"):
        provision.ensure(chaos_lab, bootstrap_db=False)
        with (
            LabDaemon(config, tmp_path) as daemon,
            AlertingChain(tmp_path / "alerting", daemon.port, WEBHOOK_TOKEN) as chain,
        ):
            probes = 'probe_success{job=~"shop-health|shop-stores"}'
            wait_for(lambda: chain.query(f"count({probes} == 1) == count({probes})"), 30,
                     "Prometheus to see every service healthy")  # fmt: skip
            for state in ("firing", "pending"):
                assert not chain.alerts(state=state), chain.alerts(state=state)
            # Prometheus scrapes remed too (the job of rules/remed.yml)
            wait_for(lambda: chain.query('up{job="remed"} == 1'), 30, "remed scraped")

            fault = make_fault("service-down", Target("app", "cart"), None, chaos_lab)
            try:
                fault.inject()
                firing = wait_for(
                    lambda: chain.alerts("ShopServiceDown", service="cart"), 60,
                    "ShopServiceDown for cart to fire",
                )  # fmt: skip
                labels = firing[0]["labels"]
                assert labels["category"] == "service-down" and labels["host"] == "app"

                def recovered() -> list[dict[str, Any]]:
                    docs = remed_json(config, "incidents")["incidents"]
                    return [d for d in docs if d["target"] == "cart@app" and d["terminal"]]

                [inc] = wait_for(recovered, 120, "remed to finish the cart incident")
                assert inc["state"] == "recovered", inc
                assert inc["source"] == "alertmanager" and inc["category"] == "service-down"
            finally:
                fault.cleanup()

            # the probe passes again: the alert resolves in Prometheus and in Alertmanager, and
            # Alertmanager tells remed (a duplicate of the finished incident)
            wait_for(lambda: not chain.alerts("ShopServiceDown", service="cart"), 60,
                     "ShopServiceDown to resolve in Prometheus")  # fmt: skip
            wait_for(lambda: not chain.am_alerts("ShopServiceDown", service="cart"), 60,
                     "ShopServiceDown to resolve in Alertmanager")  # fmt: skip
            wait_for(
                lambda: metric(daemon.url, 'remed_dedup_hits_total{source="alertmanager"}') >= 1,
                60, "Alertmanager's resolved notification at remed",
            )  # fmt: skip

            doc = remed_json(config, "show", inc["id"])
            [attempt] = doc["outcome"]["attempts"]
            assert "supervisorctl start cart" in attempt["playbook"]
            assert attempt["guard"]["allowed"] and attempt["guard"]["risk"] == "low"
            assert attempt["tasks"] and not any(t["failed"] for t in attempt["tasks"])
            assert attempt["verification"]["passed"]
            assert [e["to"] for e in doc["timeline"]] == [
                "received", "planning", "executing", "verifying", "recovered"
            ]  # fmt: skip
            # cart down makes checkout's health fail too: inhibited, so remed was asked once
            others = [d for d in remed_json(config, "incidents")["incidents"]
                      if d["state"] not in ("cancelled",) and d["id"] != inc["id"]]  # fmt: skip
            assert not others, others

    records = asyncio.run(read_topic(kafka.bootstrap, topics["outcomes_topic"], 1, 30))
    outcomes = [json.loads(r.value) for r in records]
    [outcome] = [o for o in outcomes if o["incident_id"] == inc["id"]]
    assert outcome["status"] == "recovered" and outcome["source"] == "alertmanager"
    assert outcome["category"] == "service-down" and outcome["planner"] == "oracle"
    assert outcome["target"] == {"service": "cart", "host": "app"}
