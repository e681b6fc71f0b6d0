"""`remed bench`: run chaos scenarios against a remediator and measure it.

Per case (chaostoolkit's shape: steady state → method → rollbacks that always run):
steady-state probe (reset the shop if it does not hold) → inject → confirm (the category check
must fail, else the case leaves the denominator, as in MicroRemed) → diagnosis report →
remediator → verify (category check + steady state, fault left in place) → cleanup (always) →
reset to the baseline. A remediator's plan goes through the daemon's guard first
(chaos.remediators.apply_guarded): a refused plan, or a high-risk one nobody approved, is a case
not recovered, with the verdict in the case file. Every case leaves a JSON journal in
DIR/cases/; DIR/summary.json, DIR/summary.md and DIR/success_by_category.png summarise the run.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.faults import Fault, make_fault
from chaos.lab import probes, provision
from chaos.lab.hosts import Lab
from chaos.remediators import (
    CHECK_FAILED,
    NEEDS_APPROVAL,
    REJECTED,
    Remediation,
    Remediator,
)
from chaos.scenario import Scenario, diagnosis
from remed_daemon.guard import refused_as_dangerous


@dataclass
class CaseResult:
    scenario: dict[str, Any]
    injected: bool = False
    recovered: bool = False
    injection: dict[str, Any] = field(default_factory=dict)
    confirmation: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    remediation: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    attempts: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    error: str | None = None
    cleanup_error: str | None = None

    @property
    def category(self) -> str:
        return str(self.scenario["category"])


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    started = time.monotonic()
    try:
        return fn()
    finally:
        timings[f"{name}_s"] = round(time.monotonic() - started, 3)


def _drawn_names(fault: Fault) -> dict[str, Any]:
    """The parameters whose value differs from the fault class's default: what the variant
    seed changed (or the scenario set)."""
    defaults = type(fault)(target=fault.target, lab=fault.lab).params()
    return {k: v for k, v in fault.params().items() if defaults.get(k) != v}


def run_case(
    lab: Lab, scenario: Scenario, remediator: Remediator, *, variants: bool = False,
    blind: bool = False,
) -> CaseResult:  # fmt: skip
    """One case. `variants`: draw the fault's names from the scenario's seed (its id by
    default) unless the scenario turns them off (chaos/variants.py). `blind`: the report has
    no category (chaos.scenario.diagnosis)."""
    result = CaseResult(scenario=scenario.as_dict())
    t = result.timings
    started = time.monotonic()
    fault: Fault | None = None
    try:
        state = _timed(t, "pre_probe", probes.steady_state)
        if not state.ok:
            _timed(t, "pre_reset", lambda: provision.ensure(lab, bootstrap_db=False))
        seed = scenario.variant_seed(variants)
        fault = make_fault(scenario.category, scenario.target, scenario.fault, lab, seed=seed)
        result.injection = {"fault": type(fault).__name__, "params": fault.params(),
                            "summary": fault.summary, "variant_seed": seed,
                            "names": _drawn_names(fault) if seed is not None else {}}  # fmt: skip
        _timed(t, "inject", fault.inject)
        confirm = _timed(t, "confirm", fault.confirm)
        result.confirmation = dataclasses.asdict(confirm)
        result.injected = confirm.ok
        if not confirm.ok:
            return result
        result.report = diagnosis(scenario, confirm.evidence, params=fault.params(), blind=blind)
        remediation_started = time.monotonic()
        remediation: Remediation = _timed(
            t, "remediate", lambda: remediator.remediate(scenario, result.report, fault)
        )
        result.remediation = dataclasses.asdict(remediation)
        result.attempts = remediation.attempts
        result.tokens = dict(remediation.tokens)
        verify = _timed(t, "verify", fault.verify)
        result.verification = dataclasses.asdict(verify)
        # A plan the guard refused, or one left waiting for a person, fixed nothing even if
        # the fault went away by itself.
        result.recovered = verify.ok and remediation.applied
        if verify.ok:
            t["ttr_s"] = round(time.monotonic() - remediation_started, 3)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        if fault is not None:
            try:
                _timed(t, "cleanup", fault.cleanup)
            except Exception as exc:
                result.cleanup_error = f"{type(exc).__name__}: {exc}"[:1000]
        try:
            report = _timed(t, "reset", lambda: provision.ensure(lab, bootstrap_db=False))
            result.verification.setdefault("reset_restarted", report.restarted)
        except Exception as exc:
            result.cleanup_error = f"reset: {type(exc).__name__}: {exc}"[:1000]
        t["total_s"] = round(time.monotonic() - started, 3)
    return result


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summarise(
    results: list[CaseResult], *, suite: str, remediator: str, duration_s: float
) -> dict[str, Any]:
    injected = [r for r in results if r.injected]
    recovered = [r for r in injected if r.recovered]
    ttrs = [r.timings["ttr_s"] for r in recovered if "ttr_s" in r.timings]
    by_category: dict[str, dict[str, Any]] = {}
    for r in results:
        cat = by_category.setdefault(r.category, {"cases": 0, "injected": 0, "recovered": 0})
        cat["cases"] += 1
        cat["injected"] += r.injected
        cat["recovered"] += r.injected and r.recovered
    for cat in by_category.values():
        rate = cat["recovered"] / cat["injected"] if cat["injected"] else None
        cat["success_rate"] = None if rate is None else round(rate, 3)
    resets = [r.timings.get("reset_s", 0.0) for r in results]
    # what the guard did to the plans of confirmed injections (see chaos.remediators)
    guard: dict[str, Any] = {REJECTED: 0, NEEDS_APPROVAL: 0, CHECK_FAILED: 0}
    guard["approved_by_bench"] = 0
    guard["dangerous"] = 0  # of the rejected, those refused as harmful, not as malformed
    rules: dict[str, int] = {}
    for r in injected:
        status = r.remediation.get("status")
        if status in guard:
            guard[status] += 1
        guard["approved_by_bench"] += bool(r.remediation.get("approved_by"))
        if status == REJECTED:
            refused = [v["rule"] for v in (r.remediation.get("guard") or {}).get("violations", [])]
            for rule in refused:
                rules[rule] = rules.get(rule, 0) + 1
            guard["dangerous"] += refused_as_dangerous(refused)
    guard["rules"] = dict(sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "suite": suite,
        "remediator": remediator,
        "success_rate": round(len(recovered) / len(injected), 3) if injected else 0.0,
        "cases": len(results),
        "injected": len(injected),
        "recovered": len(recovered),
        "confirmation_rate": round(len(injected) / len(results), 3) if results else 0.0,
        "by_category": dict(sorted(by_category.items())),
        "median_ttr_s": round(statistics.median(ttrs), 3) if ttrs else None,
        "p90_ttr_s": _percentile(ttrs, 0.9),
        "mean_attempts": round(statistics.mean(r.attempts for r in injected), 3)
        if injected
        else 0.0,
        "tokens": {
            "prompt": sum(r.tokens.get("prompt", 0) for r in results),
            "completion": sum(r.tokens.get("completion", 0) for r in results),
        },
        "guard": guard,
        "mean_reset_s": round(statistics.mean(resets), 3) if resets else 0.0,
        "errors": sum(r.error is not None for r in results),
        "cleanup_errors": sum(r.cleanup_error is not None for r in results),
        "duration_s": round(duration_s, 1),
    }  # fmt: skip


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# remed bench: suite `{summary['suite']}`, remediator `{summary['remediator']}`",
        "",
        f"success rate **{summary['success_rate']:.1%}** ({summary['recovered']}/"
        f"{summary['injected']} confirmed injections; {summary['cases']} cases, confirmation "
        f"rate {summary['confirmation_rate']:.0%}); median TTR {summary['median_ttr_s']} s, "
        f"p90 {summary['p90_ttr_s']} s; mean attempts {summary['mean_attempts']}; tokens "
        f"{summary['tokens']['prompt']}+{summary['tokens']['completion']}; mean reset "
        f"{summary['mean_reset_s']} s; run {summary['duration_s']} s",
        "",
        _guard_line(summary.get("guard") or {}),
        "",
        "| category | cases | injected | recovered | success |",
        "|---|---:|---:|---:|---:|",
    ]
    drift = summary.get("drift")
    if drift:
        hosts = ", ".join(
            f"{h} {drift['start']['hosts'][h].get('processes')}→"
            f"{drift['end']['hosts'].get(h, {}).get('processes')} processes"
            for h in drift["start"]["hosts"]
        )
        lines[3:3] = [
            f"drift: steady at start {drift['start']['steady']}, at end {drift['end']['steady']}; "
            f"e2e p50 {drift['start']['e2e']['p50_ms']}→{drift['end']['e2e']['p50_ms']} ms; "
            f"{hosts}",
        ]
    for name, cat in summary["by_category"].items():
        rate = "-" if cat["success_rate"] is None else f"{cat['success_rate']:.0%}"
        lines.append(
            f"| {name} | {cat['cases']} | {cat['injected']} | {cat['recovered']} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def _guard_line(guard: dict[str, Any]) -> str:
    rules = ", ".join(f"{k} {v}" for k, v in list(guard.get("rules", {}).items())[:8])
    return (
        f"guard: {guard.get(REJECTED, 0)} plan(s) rejected"
        + (f" ({rules})" if rules else "")
        + (f", {guard['dangerous']} of them as dangerous" if "dangerous" in guard else "")
        + f", {guard.get(NEEDS_APPROVAL, 0)} left waiting for approval, "
        f"{guard.get(CHECK_FAILED, 0)} stopped by the check run, "
        f"{guard.get('approved_by_bench', 0)} high-risk run with the bench approving"
    )


def chart(out: Path, summary: dict[str, Any]) -> Path:
    """Success by category for this run and any sibling runs of the same suite (DIR/../*)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {summary["remediator"]: summary}
    for other in sorted(out.parent.glob("*/summary.json")):
        try:
            data = json.loads(other.read_text())
        except (OSError, ValueError):
            continue
        if data.get("suite") == summary["suite"] and data.get("remediator") not in runs:
            runs[data["remediator"]] = data
    categories = sorted({c for s in runs.values() for c in s["by_category"]})
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(8, len(categories) * 0.9), 4.5))
    for i, (name, data) in enumerate(sorted(runs.items())):
        rates = [
            100 * (data["by_category"].get(c, {}).get("success_rate") or 0.0) for c in categories
        ]
        ax.bar([x + i * width for x in range(len(categories))], rates, width, label=name)
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(categories))])
    ax.set_xticklabels(categories, rotation=35, ha="right")
    ax.set_ylabel("recovered (% of confirmed injections)")
    ax.set_ylim(0, 105)
    ax.set_title(f"remed bench: suite {summary['suite']}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = out / "success_by_category.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _drift_sample(lab: Lab) -> dict[str, Any]:
    state = probes.steady_state(requests=16)
    return {"steady": state.ok, "e2e": state.e2e, "hosts": probes.fingerprint(lab)}


def run(
    scenarios: list[Scenario], remediator: Remediator, out: Path, *, suite: str,
    lab: Lab | None = None, progress: bool = True, variants: bool = False, blind: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Run the suite; `variants`: each fault's names drawn from its scenario's seed; `blind`:
    reports without a category."""
    lab = lab or Lab.from_paths()
    with lab.exclusive(f"remed bench {suite}/{remediator.name}"):
        return _run(scenarios, remediator, out, suite=suite, lab=lab, progress=progress,
                    variants=variants, blind=blind)  # fmt: skip


def _run(
    scenarios: list[Scenario], remediator: Remediator, out: Path, *, suite: str, lab: Lab,
    progress: bool, variants: bool = False, blind: bool = False,
) -> dict[str, Any]:  # fmt: skip
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    cases_dir = out / "cases"
    cases_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    provision.ensure(lab)
    drift: dict[str, Any] = {"start": _drift_sample(lab)}
    results: list[CaseResult] = []
    bar = tqdm(
        scenarios, desc=f"bench {suite}/{remediator.name}", unit="case", disable=not progress
    )
    for scenario in bar:
        result = run_case(lab, scenario, remediator, variants=variants, blind=blind)
        results.append(result)
        journal = dataclasses.asdict(result)
        journal["remediator"] = remediator.name
        (cases_dir / f"{scenario.id}.json").write_text(json.dumps(journal, indent=2, default=str))
        ok = sum(r.recovered for r in results if r.injected)
        bar.set_postfix(recovered=f"{ok}/{sum(r.injected for r in results)}")
    drift["end"] = _drift_sample(lab)
    summary = summarise(
        results, suite=suite, remediator=remediator.name, duration_s=time.monotonic() - started
    )
    summary["drift"] = drift
    summary["variants"] = sum(r.injection.get("variant_seed") is not None for r in results)
    summary["blind"] = blind
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    chart(out, summary)
    return summary
