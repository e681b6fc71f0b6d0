"""`remed bench --soak DURATION`: the same suite back to back, then a verdict on drift.

One bench run shows whether a case leaked into the next; a soak shows whether the lab slowly
degrades over many runs (processes piling up, disks filling, the shop getting slower, resets
taking longer, injections no longer confirming). Each run goes to DIR/run-NNN/ as an ordinary
bench run; DIR/soak.json holds one row per run and the verdict, DIR/soak.md a table and
DIR/soak.png the trends, rewritten after every run so an interrupted soak still reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos.lab.hosts import Lab
from chaos.remediators import Remediator
from chaos.scenario import Scenario

# What "no drift" tolerates between the first run's start and the last run's end. Process counts
# move by the probe's own ssh session and a worker or two; disks by the shop's own access logs.
MAX_PROCESS_GROWTH = 3
MAX_DISK_GROWTH_KB = 16 * 1024
MAX_E2E_P50_RATIO = 2.0
MAX_RESET_RATIO = 2.0
MAX_SUCCESS_DROP = 0.05

RunBench = Callable[[list[Scenario], Remediator, Path], dict[str, Any]]


def soak(
    scenarios: list[Scenario], remediator: Remediator, out: Path, *, duration_s: float,
    run_bench: RunBench, progress: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Run the suite until `duration_s` has passed (a started run always finishes)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    while not rows or time.monotonic() - started < duration_s:
        run_dir = out / f"run-{len(rows) + 1:03d}"
        summary = run_bench(scenarios, remediator, run_dir)
        rows.append(_row(summary, run_dir, elapsed_s=time.monotonic() - started))
        report = _report(rows, duration_s=duration_s, remediator=remediator.name)
        _write(out, report)
        progress(
            f"soak: run {len(rows)} done at {rows[-1]['elapsed_s'] / 60:.1f} min: "
            f"success {rows[-1]['success_rate']:.1%}, mean reset {rows[-1]['mean_reset_s']} s"
        )
    return report


def _row(summary: dict[str, Any], run_dir: Path, *, elapsed_s: float) -> dict[str, Any]:
    drift = summary["drift"]
    return {
        "run": run_dir.name,
        "elapsed_s": round(elapsed_s, 1),
        "success_rate": summary["success_rate"],
        "confirmation_rate": summary["confirmation_rate"],
        "cases": summary["cases"],
        "mean_reset_s": summary["mean_reset_s"],
        "errors": summary["errors"],
        "cleanup_errors": summary["cleanup_errors"],
        "steady_start": drift["start"]["steady"],
        "steady_end": drift["end"]["steady"],
        "e2e_p50_start_ms": drift["start"]["e2e"]["p50_ms"],
        "e2e_p50_ms": drift["end"]["e2e"]["p50_ms"],
        "hosts_start": drift["start"]["hosts"],
        "hosts_end": drift["end"]["hosts"],
    }


def _report(rows: list[dict[str, Any]], *, duration_s: float, remediator: str) -> dict[str, Any]:
    return {
        "remediator": remediator,
        "planned_s": duration_s,
        "elapsed_s": rows[-1]["elapsed_s"],
        "runs": rows,
        "problems": drift_problems(rows),
    }


def drift_problems(rows: list[dict[str, Any]]) -> list[str]:
    """Everything that got worse from the first run to the last; empty means no drift."""
    first, last = rows[0], rows[-1]
    from chaos.lab import topology as topo

    name = topo.SYSTEM.name
    problems = [f"{r['run']}: {name} not steady at the end" for r in rows if not r["steady_end"]]
    problems += [
        f"{r['run']}: {r['cleanup_errors']} cleanup errors" for r in rows if r["cleanup_errors"]
    ]
    if last["success_rate"] < first["success_rate"] - MAX_SUCCESS_DROP:
        problems.append(f"success fell {first['success_rate']:.1%} → {last['success_rate']:.1%}")
    if last["confirmation_rate"] < first["confirmation_rate"] - MAX_SUCCESS_DROP:
        problems.append(
            f"confirmation fell {first['confirmation_rate']:.1%} → {last['confirmation_rate']:.1%}"
        )
    baseline_p50 = max(first["e2e_p50_start_ms"], 1.0)
    if last["e2e_p50_ms"] > MAX_E2E_P50_RATIO * baseline_p50:
        problems.append(f"e2e p50 {baseline_p50} → {last['e2e_p50_ms']} ms")
    if last["mean_reset_s"] > MAX_RESET_RATIO * max(first["mean_reset_s"], 0.5):
        problems.append(f"mean reset {first['mean_reset_s']} → {last['mean_reset_s']} s")
    for host, before in first["hosts_start"].items():
        after = last["hosts_end"].get(host, {})
        if after.get("processes", 0) - before.get("processes", 0) > MAX_PROCESS_GROWTH:
            problems.append(f"{host}: processes {before['processes']} → {after['processes']}")
        for key in ("nft_tables", "chaos_helpers", "stress_ng", "not_running"):
            if after.get(key, 0) > before.get(key, 0):
                problems.append(f"{host}: {key} {before.get(key, 0)} → {after[key]}")
        for key, kb in before.items():
            if key.startswith("used_kb:") and after.get(key, 0) - kb > MAX_DISK_GROWTH_KB:
                problems.append(f"{host}: {key[8:]} grew {kb} → {after[key]} KB")
    return problems


def markdown(report: dict[str, Any]) -> str:
    problems = report["problems"]
    verdict = "no drift" if not problems else "DRIFT: " + "; ".join(problems)
    lines = [
        f"# remed bench soak: {len(report['runs'])} runs in {report['elapsed_s'] / 60:.1f} min, "
        f"remediator `{report['remediator']}`",
        "",
        verdict,
        "",
        "| run | at min | success | confirmed | mean reset s | e2e p50 ms | steady end | "
        "processes web/app/db |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report["runs"]:
        procs = "/".join(str(h.get("processes")) for h in r["hosts_end"].values())
        lines.append(
            f"| {r['run']} | {r['elapsed_s'] / 60:.1f} | {r['success_rate']:.1%} | "
            f"{r['confirmation_rate']:.0%} | {r['mean_reset_s']} | {r['e2e_p50_ms']} | "
            f"{r['steady_end']} | {procs} |"
        )
    return "\n".join(lines) + "\n"


def chart(out: Path, report: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    minutes = [r["elapsed_s"] / 60 for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(minutes, [100 * r["success_rate"] for r in runs], "o-", label="recovered")
    axes[0].plot(minutes, [100 * r["confirmation_rate"] for r in runs], "s--", label="confirmed")
    axes[0].set_ylim(0, 105)
    axes[0].set_ylabel("% of cases")
    axes[0].legend(loc="lower left")
    axes[1].plot(minutes, [r["mean_reset_s"] for r in runs], "o-")
    axes[1].set_ylabel("mean reset (s)")
    axes[1].set_ylim(bottom=0)
    axes[2].plot(minutes, [r["e2e_p50_ms"] for r in runs], "o-")
    axes[2].set_ylabel("e2e p50 after run (ms)")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("minutes into soak")
    fig.suptitle(f"remed bench soak ({report['remediator']})")
    fig.tight_layout()
    path = out / "soak.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write(out: Path, report: dict[str, Any]) -> None:
    tmp = out / "soak.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "soak.json")
    (out / "soak.md").write_text(markdown(report))
    chart(out, report)


def run_soak(
    scenarios: list[Scenario], remediator: Remediator, out: Path, *, suite: str,
    duration_s: float, lab: Lab, variants: bool = False, blind: bool = False,
) -> dict[str, Any]:  # fmt: skip
    from chaos.bench import run

    def one(scenarios: list[Scenario], remediator: Remediator, run_dir: Path) -> dict[str, Any]:
        return run(
            scenarios, remediator, run_dir, suite=suite, lab=lab, variants=variants, blind=blind
        )

    return soak(scenarios, remediator, out, duration_s=duration_s, run_bench=one)
