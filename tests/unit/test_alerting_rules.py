"""The shipped alerting files (deploy/) as the real tools read them: `promtool check config`
(Prometheus with its rule files), `promtool test rules` (each fault category's signal fires
its alert with the labels remed needs; remed's own alerts), `amtool check-config` and its
routing (shop alerts reach remed, remed's own alerts only people), blackbox exporter's
`--config.check`; and the webhook's mapping of a rule's `category` label into the report."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from remed_daemon.sources.alertmanager import map_alerts

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def tool(path: str) -> str:
    found = shutil.which(path)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: run make setup (scripts/setup-debian.sh)")
        pytest.skip(f"{path} is not installed")
    return found


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )  # fmt: skip


def test_prometheus_config_and_rules_load() -> None:
    done = run(tool("promtool"), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("suite", ["shop-faults.test.yml", "remed.test.yml"])
def test_rules_fire_as_specified(suite: str) -> None:
    tests = DEPLOY / "prometheus" / "tests"
    done = run(tool("promtool"), "test", "rules", suite, cwd=tests)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_shop_rule_names_a_catalog_category() -> None:
    import yaml

    from chaos.faults import CATEGORIES

    doc = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "shop-faults.yml").read_text())
    categories = {r["labels"]["category"] for g in doc["groups"] for r in g["rules"]}
    assert categories <= set(CATEGORIES), categories - set(CATEGORIES)
    assert len(categories) >= 10


def test_alertmanager_routes_shop_alerts_to_remed_and_remed_alerts_to_people() -> None:
    amtool = tool("amtool")
    conf = str(DEPLOY / "alertmanager" / "alertmanager.yml")
    done = run(amtool, "check-config", conf)
    assert done.returncode == 0, done.stdout + done.stderr
    shop = run(amtool, "config", "routes", "test", f"--config.file={conf}",
               "alertname=ShopServiceDown", "service=cart", "host=app",
               "category=service-down")  # fmt: skip
    assert shop.stdout.split() == ["remed,oncall"], shop
    own = run(amtool, "config", "routes", "test", f"--config.file={conf}",
              "alertname=RemedDown", "component=remed", "service=remed", "host=ops1",
              "category=x")  # fmt: skip
    assert own.stdout.split() == ["oncall"], own
    untargeted = run(amtool, "config", "routes", "test", f"--config.file={conf}", "alertname=X")
    assert untargeted.stdout.split() == ["oncall"], untargeted


def test_blackbox_modules_load() -> None:
    done = run(tool("prometheus-blackbox-exporter"), "--config.check",
               f"--config.file={DEPLOY / 'blackbox' / 'blackbox.yml'}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _payload(labels: dict[str, str]) -> dict[str, object]:
    return {
        "version": "4", "groupKey": "g", "status": "firing",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": "down"},
                    "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "abc123"}],
    }  # fmt: skip


def test_the_category_label_becomes_the_reports_hint() -> None:
    base = {"alertname": "ShopServiceDown", "service": "cart", "host": "app"}
    [m] = map_alerts(_payload({**base, "category": "service-down"}), ("service",), ("host",))
    assert m.report["category"] == "service-down" and not m.unroutable
    [m] = map_alerts(_payload({**base, "category": "not a name; rm -rf"}), ("service",), ("host",))
    assert "category" not in m.report and not m.unroutable  # not a plain name: no hint
    [m] = map_alerts(_payload(base), ("service",), ("host",))
    assert "category" not in m.report
