"""`remed train eval`: how well a served planner version does, offline and live.

- **Offline** on a dataset split (default `test`): each example's prompt goes to the version
  Triton serves (so the weight format measured is the served one); the answer must match the
  expert: a playbook is extracted, the guard allows it for the incident's hosts, it targets the
  same hosts, and every expert task has a task with the same module and the same key arguments
  (command lines, paths, names, ports, table names, file content). A probe-request turn matches
  when the answer asks (at least) for the probes the expert asked for and writes no playbook.
  Reported per category and per turn kind.
- **Live**: `remed bench` one-shot with the model remediator, and the ThinkRemed loop through
  the daemon (`benchmarks/daemon_e2e.py --planner triton`), both on lab suites.

`evaluate_version` is the whole of `remed train eval`: serve the version asked for (if another
is served), measure it offline and live, serve the one before again. Its `evaluation.json` (in
the output directory) is what the promotion gate (`trainer/gate.py`) reads; the Real-RFT
rounds (trainer/real_rft/gating.py) call it the same way for their candidates.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from remed_daemon.agents.probe import requested_probes
from remed_daemon.guard import check_playbook, refused_as_dangerous
from remed_daemon.planner import TritonPlanner, TritonSettings
from remed_daemon.planner.extract import extract_playbook

ROOT = Path(__file__).resolve().parent.parent
# Arguments that decide what a task does to the host; cosmetic ones (name, register, changed_when)
# are not compared.
KEY_ARGS = ("cmd", "argv", "path", "dest", "src", "name", "state", "regexp", "line", "owner",
            "group", "mode", "content", "port", "table", "chain", "family", "signal", "pattern",
            "enabled", "url", "host", "value", "key", "section", "option")  # fmt: skip
TASK_KEYWORDS = {
    "name", "register", "when", "changed_when", "failed_when", "become", "become_user",
    "until", "retries", "delay", "ignore_errors", "loop", "with_items", "notify", "args",
    "tags", "vars", "environment", "no_log", "check_mode", "diff", "timeout", "loop_control",
}  # fmt: skip


def _norm(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip()


def _module(task: Mapping[str, Any]) -> tuple[str, Any]:
    for key, value in task.items():
        if key not in TASK_KEYWORDS:
            name = str(key)
            return name.removeprefix("ansible.builtin.").removeprefix("ansible.legacy."), value
    return "", None


def _signature(task: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    module, args = _module(task)
    merged: dict[str, Any] = {}
    if isinstance(task.get("args"), Mapping):
        merged.update(task["args"])
    if isinstance(args, Mapping):
        merged.update(args)
    elif args is not None:
        merged["cmd"] = args
    return module, {k: _norm(v) for k, v in merged.items() if k in KEY_ARGS}


def _plays(playbook: str) -> list[Mapping[str, Any]]:
    try:
        doc = yaml.safe_load(playbook)
    except yaml.YAMLError:
        return []
    return [p for p in doc if isinstance(p, Mapping)] if isinstance(doc, list) else []


def _hosts(plays: Sequence[Mapping[str, Any]]) -> set[str]:
    out: set[str] = set()
    for play in plays:
        hosts = play.get("hosts", "")
        items = hosts if isinstance(hosts, list) else str(hosts).split(",")
        out |= {str(h).strip() for h in items if str(h).strip()}
    return out


def _tasks(plays: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, str]]]:
    return [
        _signature(t) for play in plays for t in (play.get("tasks") or []) if isinstance(t, Mapping)
    ]


GUARD_REFUSED = "guard refused: "  # then the rules, comma-separated (match's `why`)


def refused_rules(why: str) -> list[str]:
    """The guard's rules named in a `why` of `match` (empty when the guard refused nothing)."""
    rest = why[len(GUARD_REFUSED) :] if why.startswith(GUARD_REFUSED) else ""
    return [rule for rule in rest.split(", ") if rule]


def match(completion: str, example: Mapping[str, Any]) -> tuple[bool, str]:
    """Does `completion` do what the expert's answer for `example` does? (ok, why not)."""
    expected = str(example["completion"])
    wanted_probes = requested_probes(expected)
    if wanted_probes and not extract_playbook(expected):
        asked = set(requested_probes(completion))
        if extract_playbook(completion):
            return False, "wrote a playbook where the expert asked for probes"
        missing = set(wanted_probes) - asked
        return (not missing, f"did not ask for {sorted(missing)}" if missing else "")
    playbook = extract_playbook(completion)
    if not playbook:
        return False, "no playbook"
    verdict = check_playbook(playbook, list(example["hosts"]))
    if not verdict.allowed:
        rules = ", ".join(sorted({v.rule for v in verdict.violations}))
        return False, f"{GUARD_REFUSED}{rules}"
    got, want = _plays(playbook), _plays(str(example["expert"]))
    if _hosts(got) != _hosts(want):
        return False, f"hosts {sorted(_hosts(got))} != {sorted(_hosts(want))}"
    candidate = _tasks(got)
    for module, args in _tasks(want):
        if not any(m == module and all(a.get(k) == v for k, v in args.items())
                   for m, a in candidate):  # fmt: skip
            return False, f"no {module} task with {args}"[:300]
    return True, ""


# -- offline ----------------------------------------------------------------------------------


async def _complete_all(
    prompts: Sequence[str], url: str, concurrency: int, max_tokens: int
) -> list[tuple[str, int, int, float]]:
    planner = TritonPlanner(TritonSettings(url=url, max_tokens=max_tokens, timeout_s=600.0))
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> tuple[str, int, int, float]:
        async with sem:
            started = time.monotonic()
            answer = await planner.complete(prompt)
            return (answer.text, answer.prompt_tokens, answer.completion_tokens,
                    time.monotonic() - started)  # fmt: skip

    return list(await asyncio.gather(*(one(p) for p in prompts)))


def offline(
    examples: Sequence[Mapping[str, Any]], *, url: str, concurrency: int = 8,
    max_tokens: int = 384, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Score the served version on `examples`; per-example results under `cases`."""
    from tqdm import tqdm

    cases = []
    batch = max(concurrency * 2, 1)
    bar = tqdm(total=len(examples), desc="eval offline", unit="ex", disable=not progress)
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        answers = asyncio.run(
            _complete_all([str(e["prompt"]) for e in chunk], url, concurrency, max_tokens)
        )
        for example, (text, ptok, ctok, seconds) in zip(chunk, answers, strict=True):
            ok, why = match(text, example)
            cases.append({
                "id": example["id"], "category": example["category"], "turn": example["turn"],
                "family": example["family"], "blind": example["blind"], "matched": ok,
                "why": why, "completion": text, "prompt_tokens": ptok,
                "completion_tokens": ctok, "seconds": round(seconds, 3),
            })  # fmt: skip
        bar.update(len(chunk))
        bar.set_postfix(matched=f"{sum(c['matched'] for c in cases)}/{len(cases)}")
    bar.close()
    return summarise_offline(cases)


def _rate(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(cases)
    k = sum(bool(c["matched"]) for c in cases)
    return {"matched": k, "total": n, "rate": round(k / n, 4) if n else None}


def summarise_offline(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    groups: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for c in cases:
        for key in ("category", "turn", "family"):
            groups[key][str(c[key])].append(c)
        groups["blind"][str(bool(c["blind"]))].append(c)
    refused = [c for c in cases if str(c["why"]).startswith(GUARD_REFUSED)]
    return {
        **_rate(cases),
        "guard_refused": len(refused),
        # malformed playbooks are refused too; the gate's "nothing dangerous" counts the rest
        "guard_dangerous": sum(refused_as_dangerous(refused_rules(c["why"])) for c in refused),
        "no_playbook": sum(c["why"] == "no playbook" for c in cases),
        "completion_tokens": sum(int(c["completion_tokens"]) for c in cases),
        **{f"by_{key}": {k: _rate(v) for k, v in sorted(g.items())} for key, g in groups.items()},
        "cases": list(cases),
    }


# -- live -------------------------------------------------------------------------------------


def _python() -> str:
    return sys.executable


def live_bench(
    suite: str, out: Path, *, remediator: str = "model", extra: Sequence[str] = (),
    timeout_s: float = 7200,
) -> dict[str, Any]:  # fmt: skip
    """`remed bench --suite SUITE --remediator R` into `out`; its summary.json."""
    cmd = [_python(), "-m", "remed_cli", "bench", "--suite", suite, "--remediator", remediator,
           "--out", str(out), *extra]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=timeout_s)
    return dict(json.loads((out / "summary.json").read_text()))


def live_loop(
    suite: str, out: Path, *, planner: str = "triton", extra: Sequence[str] = (),
    timeout_s: float = 7200,
) -> dict[str, Any]:  # fmt: skip
    """The ThinkRemed loop through the daemon (`benchmarks/daemon_e2e.py`); its bench summary
    (the benchmark writes it under `out/bench/`)."""
    cmd = [_python(), str(ROOT / "benchmarks" / "daemon_e2e.py"), "--suite", suite,
           "--planner", planner, "--out", str(out), *extra]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=timeout_s)
    return dict(json.loads((out / "bench" / "summary.json").read_text()))


def live_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a bench summary that the evaluation table and the gate use."""
    guard = summary.get("guard", {}) or {}
    return {
        "recovered": summary.get("recovered"),
        "injected": summary.get("injected"),
        "success_rate": summary.get("success_rate"),
        "guard_rejected": guard.get("rejected", 0),
        "guard_dangerous": guard.get("dangerous", guard.get("rejected", 0)),
        "mean_attempts": summary.get("mean_attempts"),
        "median_ttr_s": summary.get("median_ttr_s"),
        "tokens": summary.get("tokens"),
        "by_category": summary.get("by_category"),
    }


class EvaluationError(ValueError):
    """The evaluation cannot start as asked; the message says what to pass."""


class Versions(Protocol):
    """What evaluation needs of a model-version manager (`ModelVersions`, or the CLI's)."""

    def served(self) -> list[int]: ...

    def load(self, version: int) -> Any: ...


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    """Until Triton says it is ready: right after a version swap it still unloads the old
    version, its strict readiness is false for a few seconds, and a bench started then
    refuses to run ("Triton is not up")."""
    import urllib.error
    import urllib.request

    base = url if url.startswith("http") else f"http://{url}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise EvaluationError(f"Triton at {base} not ready {timeout_s:.0f}s after the swap")
        time.sleep(1.0)


def evaluate_version(
    version: int | None,
    versions: Versions,
    *,
    url: str,
    out: Path,
    dataset: Path | None = None,
    split: str = "test",
    limit: int | None = None,
    concurrency: int = 8,
    suites: Sequence[str] = (),
    loop_suites: Sequence[str] = (),
    bench_extra: Sequence[str] = (),
    restore: bool = True,
    progress: bool = True,
    timeout_s: float = 7200,
) -> dict[str, Any]:
    """Measure `version` (default: the served one) offline on `dataset`'s `split` and live on
    each one-shot `suites` and loop `loop_suites`; write `out/evaluation.json` (and
    `offline_cases.jsonl`, `table.md`) and return it. A version not served is loaded for the
    measurement and, with `restore`, the one served before is loaded again afterwards
    (also when the measurement fails)."""
    from trainer import data

    out.mkdir(parents=True, exist_ok=True)
    before = list(versions.served())
    version = version or (before[0] if before else None)
    if version is None:
        raise EvaluationError("Triton serves no version: pass --version N")
    if version not in before:
        versions.load(version)
        wait_ready(url)
    result: dict[str, Any] = {"version": version, "served_before": before, "live": {}}
    try:
        if dataset is not None:
            examples = data.read_split(Path(dataset), split)
            if limit:  # spread over the split (it is ordered by record), not its first pairs
                examples = examples[:: max(1, len(examples) // limit)][:limit]
            scored = offline(examples, url=url, concurrency=concurrency, progress=progress)
            (out / "offline_cases.jsonl").write_text(
                "".join(json.dumps(c) + "\n" for c in scored.pop("cases"))
            )
            result["offline"] = {"dataset": str(dataset), "split": split, **scored}
        for suite in suites:
            summary = live_bench(suite, out / f"bench-{suite}", extra=bench_extra,
                                 timeout_s=timeout_s)  # fmt: skip
            result["live"][f"oneshot/{suite}"] = live_row(summary)
        for suite in loop_suites:
            summary = live_loop(suite, out / f"loop-{suite}", extra=bench_extra,
                                timeout_s=timeout_s)  # fmt: skip
            result["live"][f"loop/{suite}"] = live_row(summary)
    finally:
        if restore and before and version not in before:
            versions.load(before[0])
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    if result["live"]:
        (out / "table.md").write_text(table(result["live"]))
    return result


def table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One markdown table: each row a planner (base, candidate, oracle, rules), each live
    figure a column, success per category beside them."""
    categories = sorted({c for r in rows.values() for c in (r.get("by_category") or {})})
    head = ["planner", "success", "attempts", "tokens", "median TTR s", *categories]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cats = r.get("by_category") or {}
        tokens = r.get("tokens") or {}
        total_tokens = sum(tokens.values()) if isinstance(tokens, Mapping) else tokens
        cells = [
            name,
            f"{r.get('recovered')}/{r.get('injected')}",
            f"{r.get('mean_attempts')}",
            f"{total_tokens}",
            f"{r.get('median_ttr_s')}",
            *(_cat(cats.get(c)) for c in categories),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cat(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return "-"
    return f"{entry.get('recovered', 0)}/{entry.get('injected', entry.get('cases', 0))}"
