"""The alerting chain in front of `remed serve`, from the files an ops team copies: blackbox
exporter (`deploy/blackbox/blackbox.yml`) probing the shop, Prometheus
(`deploy/prometheus/prometheus.yml` with `rules/`) scraping it and evaluating the alert rules
per fault category, Alertmanager (`deploy/alertmanager/alertmanager.yml`) posting to remed's
webhook with its bearer token. The Debian packages' binaries, on loopback ports from the OS.

What changes from the shipped files, and only that: listen addresses and ports, the webhook's
URL and token file, the scrape and evaluation intervals, every rule's `for:` scaled by
`time_scale`, and Alertmanager's grouping waits, so that a fault shows as an alert within
seconds (the e2e test and `make demo`); the jobs without a target here (node_exporter) are
dropped, and remed's own metrics are scraped from the daemon's port.

    with AlertingChain(work_dir, remed_port=9095, webhook_token="...") as chain:
        chain.wait_probe("cart", healthy=True)
        chain.wait_alert("ShopServiceDown", service="cart")
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from remed_stack.procs import StackError, free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
HTTP_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def _duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "").isdigit():
            return float(text[: -len(unit)]) * units[unit]
    raise ValueError(f"not a Prometheus duration: {text!r}")


def scaled_rules(src: Path, scale: float) -> dict[str, Any]:
    """A rules file with each `for:` multiplied by `scale` (at least 1 s)."""
    doc: dict[str, Any] = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{max(1, round(_duration_s(rule['for']) * scale))}s"
    return doc


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
        return json.loads(r.read())


@dataclass
class AlertingChain:
    work: Path
    remed_port: int
    webhook_token: str
    time_scale: float = 1 / 15
    interval_s: float = 1.0
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> AlertingChain:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for binary in (PROMETHEUS, ALERTMANAGER, BLACKBOX):
            if not Path(binary).is_file():
                raise StackError(f"{binary} is missing: run `make setup` (scripts/setup-debian.sh)")
        self.work.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("blackbox", "alertmanager", "prometheus")}
        try:
            self._start_blackbox()
            self._start_alertmanager()
            self._start_prometheus()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in ("prometheus", "alertmanager", "blackbox"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _spawn(self, name: str, argv: list[str], ready_url: str) -> None:
        log = open(self.work / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise StackError(f"{argv[0]} exited with {self.procs[name].returncode}; see "
                                 f"{self.work / f'{name}.log'}")  # fmt: skip
            try:
                with urllib.request.urlopen(ready_url, timeout=HTTP_TIMEOUT_S) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise StackError(f"{name} not ready at {ready_url} within {READY_TIMEOUT_S}s")

    def _start_blackbox(self) -> None:
        port = self.ports["blackbox"]
        self._spawn("blackbox", [
            BLACKBOX, f"--config.file={DEPLOY / 'blackbox' / 'blackbox.yml'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        ], f"http://127.0.0.1:{port}/-/healthy")  # fmt: skip

    def _start_alertmanager(self) -> None:
        doc = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
        token = self.work / "remed-webhook-token"
        token.write_text(self.webhook_token)
        token.chmod(0o600)
        for receiver in doc["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = f"http://127.0.0.1:{self.remed_port}/webhook/alertmanager"
                hook["http_config"]["authorization"]["credentials_file"] = str(token)
        wait = f"{max(self.interval_s, 1):.0f}s"
        doc["route"].update(group_wait="0s", group_interval=wait)
        conf = self.work / "alertmanager.yml"
        conf.write_text(yaml.safe_dump(doc, sort_keys=False))
        port = self.ports["alertmanager"]
        self._spawn("alertmanager", [
            ALERTMANAGER, f"--config.file={conf}", f"--storage.path={self.work / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            "--log.level=warn",
        ], f"http://127.0.0.1:{port}/-/ready")  # fmt: skip

    def _start_prometheus(self) -> None:
        src = DEPLOY / "prometheus"
        doc = yaml.safe_load((src / "prometheus.yml").read_text())
        every = f"{self.interval_s:g}s"
        doc["global"].update(scrape_interval=every, evaluation_interval=every, scrape_timeout=every)
        rules = []
        for name in doc["rule_files"]:
            out = self.work / "rules" / Path(name).name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(
                yaml.safe_dump(scaled_rules(src / name, self.time_scale), sort_keys=False)
            )
            rules.append(str(out))
        doc["rule_files"] = rules
        am = f"127.0.0.1:{self.ports['alertmanager']}"
        doc["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [am]}]}]
        jobs = []
        for job in doc["scrape_configs"]:
            if job["job_name"] == "node":
                continue  # no node_exporter on the lab hosts (they share one kernel)
            if job["job_name"] == "remed":
                job["static_configs"] = [{"targets": [f"127.0.0.1:{self.remed_port}"]}]
            for relabel in job.get("relabel_configs", []):
                if relabel.get("target_label") == "__address__":
                    relabel["replacement"] = f"127.0.0.1:{self.ports['blackbox']}"
            jobs.append(job)
        doc["scrape_configs"] = jobs
        conf = self.work / "prometheus.yml"
        conf.write_text(yaml.safe_dump(doc, sort_keys=False))
        port = self.ports["prometheus"]
        self._spawn("prometheus", [
            PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={self.work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        ], f"http://127.0.0.1:{port}/-/ready")  # fmt: skip

    # -- what it sees ---------------------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['alertmanager']}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        result: list[dict[str, Any]] = _get(f"{self.prometheus_url}/api/v1/query?{q}")["data"][
            "result"
        ]
        return result

    def alerts(
        self, alertname: str = "", state: str = "firing", **labels: str
    ) -> list[dict[str, Any]]:
        """Prometheus's alerts in `state` (pending | firing), by name and labels."""
        found = _get(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"]
        return [
            a for a in found
            if a["state"] == state
            and (not alertname or a["labels"].get("alertname") == alertname)
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]  # fmt: skip

    def am_alerts(self, alertname: str = "", **labels: str) -> list[dict[str, Any]]:
        """Alertmanager's active (not resolved) alerts, by name and labels."""
        found = _get(f"{self.alertmanager_url}/api/v2/alerts?active=true&inhibited=true")
        return [
            a for a in found
            if (not alertname or a["labels"].get("alertname") == alertname)
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]  # fmt: skip

    def probe_ok(self, service: str) -> bool | None:
        """The last health probe of `service` (None before the first scrape)."""
        rows = self.query(f'probe_success{{job=~"shop-health|shop-stores",service="{service}"}}')
        return bool(float(rows[0]["value"][1])) if rows else None
