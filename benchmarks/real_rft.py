"""The flip, shown: Real-RFT learns a preferred form from operator feedback and serves it
only through the gate (issue 18).

Against a running stack (`remed stack up`: Kafka, Triton serving one version, the lab):

1. **Before.** The served version answers the held-out prompts of one category (the test
   split of `--dataset`, the turns that write a playbook); `preferred_form_before` is the share
   of answers in the preferred form.
2. **Stream.** A daemon of its own (benchmarks/daemon_e2e.py's, private Kafka topics, the
   served version as planner, ansible mode) remediates a stream of lab incidents: `--incidents`
   of the category and `--others` of other categories, from `--stream-suite` (never the gate's
   held-out suite).
3. **Operator.** A scripted operator reads each outcome and sends feedback through
   remed_daemon/feedback.py (the guard judges the correction first, as `remed feedback` does):
   for the category, `bad` with a corrected playbook in the preferred form (SIGTERM, then wait
   until the process has gone, instead of SIGKILL) for the incident's own target; for the
   others, `good` when the incident recovered and `bad` when it did not.
4. **Trainer.** `remed train real-rft` (its own state directory and consumer group, the
   private topics) stores outcomes and feedback, trains a KTO round once the feedback has
   waited `--round-age-s`, evaluates the candidate beside the served version with `remed train
   eval`'s machinery on the held-out `--gate-suite` (`remed bench`, limited by `--gate-limit`),
   runs the stage-1 gate and, if it passes, `remed model load N` swaps Triton to it.
5. **After.** The served version answers the same held-out prompts again:
   `preferred_form_after`. `suite_before`/`suite_after` are the gate's live success rates of the
   served version and the candidate on the gate suite; `minutes` runs from the first feedback to
   the swap (to the round's end when refused).

Unless `--keep`, the version served before is loaded again at the end and the versions the run
created move out of model_repo into DIR/versions/, so the stack is left as it was found.

    python benchmarks/real_rft.py --out /tmp/real-rft [--incidents 6 --others 2]

Prints a table, then one JSON line:
`{"feedback": N, "rounds": R, "promoted_version": V, "preferred_form_before": x,
"preferred_form_after": y, "suite_before": a, "suite_after": b, "minutes": m}`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import daemon_e2e  # noqa: E402

from chaos.bench import run as run_bench  # noqa: E402
from chaos.lab.hosts import Lab  # noqa: E402
from chaos.playbooks import HEADER, _kill, _wait_gone, fault_param  # noqa: E402
from chaos.remediators import DaemonRemediator  # noqa: E402
from chaos.scenario import Scenario, load_suite  # noqa: E402
from remed_daemon.planner.extract import extract_playbook  # noqa: E402
from remed_stack.kafka import create_private_topics  # noqa: E402
from remed_stack.paths import StackPaths  # noqa: E402
from remed_stack.stack import make_component  # noqa: E402

CATEGORIES = ("cpu-stress", "memory-stress")  # the hog is killed: SIGKILL vs SIGTERM-then-wait
PLAYBOOK_TURNS = ("oneshot", "probed", "after-probes")  # the turns whose expert writes a playbook
OPERATOR = "bench-operator"
KAFKA_TIMEOUT_MS = 30_000


# -- the preferred form -------------------------------------------------------------------------

KILL_LINE = re.compile(r"\b(?:pkill|kill|killall)\b[^\n]*")
HARD = re.compile(r"(?:^|\s)-(?:KILL|9|SIGKILL|s\s*(?:KILL|9))\b")
SOFT = re.compile(r"(?:^|\s)-(?:TERM|15|SIGTERM|s\s*(?:TERM|15))\b")


def preferred(completion: str) -> bool:
    """The answer's playbook stops the process with SIGTERM (never SIGKILL) and then waits
    until it has gone (`pgrep` ... `until`)."""
    playbook = extract_playbook(completion) or ""
    kills = KILL_LINE.findall(playbook)
    if not kills or any(HARD.search(k) for k in kills):
        return False
    return any(SOFT.search(k) for k in kills) and "pgrep" in playbook and "until:" in playbook


def corrected_playbook(category: str, host: str, service: str, params: Mapping[str, Any]) -> str:
    """The operator's correction: the expert's fix (chaos/playbooks.py) for this incident's own
    process, in the gentler form."""
    hog = str(fault_param(category, dict(params), "hog"))
    what = hog.rsplit("/", 1)[-1]
    return (
        HEADER.format(name=f"fix {category} of {service} on {host}", host=host)
        + _kill(hog, f"the runaway {what} process outside supervisord", signal="TERM")
        + _wait_gone(hog, what)
    )


def held_out(dataset: Path, category: str, limit: int) -> list[dict[str, Any]]:
    from trainer import data

    rows = [
        e for e in data.read_split(dataset, "test")
        if e["category"] == category and e["turn"] in PLAYBOOK_TURNS
    ]  # fmt: skip
    return rows[:limit] if limit else rows


def preferred_share(url: str, examples: Sequence[Mapping[str, Any]]) -> tuple[float, list[str]]:
    from trainer import evaluate

    cases = evaluate.offline(examples, url=url, concurrency=4, progress=False)["cases"]
    answers = [str(c["completion"]) for c in cases]
    return round(sum(preferred(a) for a in answers) / max(len(answers), 1), 4), answers


# -- the stack ------------------------------------------------------------------------------------


def served_dataset(model_dir: Path, version: int) -> Path | None:
    """The dataset the served version was trained on (its card's `dataset:`), if it says."""
    card = model_dir / str(version) / "MODEL_CARD.md"
    m = re.search(r"^dataset: (\S+)$", card.read_text(), re.M) if card.is_file() else None
    if not m:
        return None
    name = Path(m.group(1))  # a path, or a name under trainer/data/
    for path in (name, ROOT / name, ROOT / "trainer" / "data" / name):
        if (path / "test.jsonl").is_file():
            return path
    return None


async def create_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=KAFKA_TIMEOUT_MS)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)], timeout_ms=KAFKA_TIMEOUT_MS)
    finally:
        await admin.close()


def stream(suite: str, category: str, incidents: int, others: int) -> list[Scenario]:
    """`incidents` of the category and `others` of other categories, cycling through the
    suite's scenarios (a repeat is a new incident with a new id)."""
    scenarios = load_suite(suite)
    mine = [s for s in scenarios if s.category == category]
    rest = [s for s in scenarios if s.category != category]
    if not mine:
        raise SystemExit(f"real_rft: suite {suite!r} has no {category} scenario")
    chosen = list(itertools.islice(itertools.cycle(mine), incidents))
    by_cat: dict[str, list[Scenario]] = {}
    for s in rest:
        by_cat.setdefault(s.category, []).append(s)
    spread = [s for group in itertools.zip_longest(*by_cat.values()) for s in group if s]
    chosen += list(itertools.islice(itertools.cycle(spread), others)) if spread and others else []
    out = []
    for n, s in enumerate(chosen):  # unique ids: the bench's case files are keyed by them
        out.append(Scenario(f"{s.id}-rft{n:02d}", s.category, s.target, s.fault, s.report,
                            s.source, s.seed, s.variants))  # fmt: skip
    return out


def trainer_config(out: Path, args: argparse.Namespace, bootstrap: str, topics: Mapping[str, str],
                   triton_url: str) -> Path:  # fmt: skip
    bench_args = ["--limit", str(args.gate_limit)] if args.gate_limit else []
    if args.gate_category:
        bench_args += ["--category", args.gate_category]
    text = f"""\
[real_rft]
state_dir = "{out / "trainer"}"
group_id = "remed-trainer-bench-{os.getpid()}"
outcomes_topic = "{topics["outcomes_topic"]}"
feedback_topic = "{topics["feedback_topic"]}"
feedback_grace_s = 86400.0          # every outcome gets the operator's word; none counts unrated
round_min_examples = 100000         # a round starts by age: once the feedback has arrived
round_max_age_s = {args.round_age_s}
round_min_examples_on_age = 2
round_check_interval_s = 5.0
max_examples_per_author_per_category = {args.author_cap}
model_repo = "{ROOT / "model_repo"}"
triton_url = "{triton_url}"
gate = "stage1"
gate_dataset = "{args.gate_dataset}"
gate_offline_limit = {args.gate_offline_limit}
gate_suite = "{args.gate_suite}"
gate_bench_args = {json.dumps(bench_args)}
weights = "{args.weights}"
epochs = {args.epochs}
max_steps = {args.max_steps}
learning_rate = {args.learning_rate}
beta = {args.beta}
batch_size = {args.batch_size}
torch_threads = {os.cpu_count() or 2}

[kafka]
bootstrap = "{bootstrap}"
"""
    path = out / "trainer.toml"
    path.write_text(text)
    return path


def start_trainer(config: Path, out: Path) -> subprocess.Popen[bytes]:
    log = (out / "trainer.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "remed_cli", "train", "real-rft", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def trainer_status(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "trainer" / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


# -- the operator ---------------------------------------------------------------------------------


def rate(cases_dir: Path, category: str, daemon_cfg: Path) -> list[dict[str, Any]]:
    """One feedback per incident of the stream, as described in the module doc; each sent
    through remed_daemon/feedback.py (a correction the guard refuses is not sent)."""
    from remed_daemon import config as config_mod
    from remed_daemon.errors import RemedError
    from remed_daemon.feedback import feedback_doc, judge_correction, send_feedback
    from trainer.real_rft.examples import outcome_hosts

    kafka = config_mod.load(daemon_cfg).kafka
    sent = []
    for case_file in sorted(cases_dir.glob("*.json")):
        case = json.loads(case_file.read_text())
        outcome = (case.get("remediation") or {}).get("outcome") or {}
        if not outcome.get("incident_id"):
            continue  # no outcome (not injected, or the daemon did not answer): nothing to rate
        scenario = case["scenario"]
        playbook = None
        if scenario["category"] == category:
            verdict = "bad"
            target = scenario["target"]
            params = (case.get("injection") or {}).get("params") or {}
            playbook = corrected_playbook(category, target["host"], target["service"], params)
            try:
                judge_correction(playbook, outcome_hosts(outcome))
            except RemedError as exc:
                print(f"real_rft: the correction for {case_file.stem} was refused: {exc}",
                      file=sys.stderr)  # fmt: skip
                continue
        else:
            verdict = "good" if case.get("recovered") else "bad"
        doc = feedback_doc(
            str(outcome["incident_id"]), verdict, corrected_playbook=playbook, author=OPERATOR,
            comment="SIGTERM, then wait until it has gone" if playbook else None,
        )  # fmt: skip
        receipt = asyncio.run(send_feedback(kafka, doc))
        written = sum(bool(a.get("playbook")) for a in outcome.get("attempts", []))
        sent.append({"incident_id": outcome["incident_id"], "case": case_file.stem,
                     "verdict": verdict, "corrected": playbook is not None, "at": time.time(),
                     "offset": receipt.offset, "playbooks": written})  # fmt: skip
    return sent


# -- the run --------------------------------------------------------------------------------------


def wait_for_round(out: Path, trainer: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The first round that ended (promoted, refused or failed)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if trainer.poll() is not None:
            raise SystemExit(f"real_rft: the trainer exited with {trainer.returncode}: see "
                             f"{out / 'trainer.log'}")  # fmt: skip
        status = trainer_status(out)
        rounds = status.get("rounds") or []
        done = [r for r in rounds if r.get("status") in ("promoted", "refused", "failed")]
        if done:
            return dict(done[0])
        line = f"trainer: {status.get('outcomes', 0)} outcomes, {status.get('feedback', 0)} " \
               f"feedback, rounds {[r.get('status') for r in rounds]}"  # fmt: skip
        if line != last:
            print(line, file=sys.stderr)
            last = line
        time.sleep(10)
    raise SystemExit(f"real_rft: no round ended within {timeout_s:.0f}s: see {out}/trainer.log")


def restore(versions: Any, served: int, created: Sequence[int], model_dir: Path, out: Path) -> None:
    if served not in versions.served():
        versions.load(served)
    for v in created:
        if (model_dir / str(v)).is_dir() and v not in versions.served():
            (out / "versions").mkdir(exist_ok=True)
            shutil.move(str(model_dir / str(v)), str(out / "versions" / str(v)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--category", default="cpu-stress", choices=CATEGORIES)
    p.add_argument("--incidents", type=int, default=6, help="incidents of the category")
    p.add_argument("--others", type=int, default=2, help="incidents of other categories")
    p.add_argument(
        "--stream-suite", default="medium", help="where the stream's scenarios come from"
    )
    p.add_argument(
        "--dataset",
        type=Path,
        help="held-out prompts: this dataset's test split "
        "(default: the served version's own dataset, else trainer/data/sft-v1)",
    )
    p.add_argument("--held-out", type=int, default=14, help="held-out prompts (0 = all)")
    p.add_argument("--gate-suite", default="hard", help="the held-out suite the gate benches")
    p.add_argument("--gate-limit", type=int, default=12, help="its first N cases (0 = all)")
    p.add_argument("--gate-category", default="", help="only these categories in the gate")
    p.add_argument("--gate-dataset", default="", help="offline part of the gate ('' = none)")
    p.add_argument("--gate-offline-limit", type=int, default=0)
    p.add_argument("--round-age-s", type=float, default=30.0)
    p.add_argument(
        "--author-cap",
        type=int,
        default=64,
        help="max_examples_per_author_per_category (one scripted operator here)",
    )
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--weights", default="q8", choices=("q8", "fp32", "q4"))
    p.add_argument("--round-timeout-min", type=float, default=120.0)
    p.add_argument("--daemon-timeout-s", type=float, default=240.0)
    p.add_argument("--keep", action="store_true", help="leave the promoted version served")
    args = p.parse_args(argv)

    from trainer.real_rft.config import RealRftConfig
    from trainer.real_rft.rounds import versions_of

    paths = StackPaths.from_env()
    kafka = make_component("kafka", paths).status()
    triton = make_component("triton", paths).status()
    lab = Lab.from_paths()
    missing = [n for n, ok in (("Kafka", kafka.get("ok")), ("Triton", triton.get("ok")),
                               ("the lab", lab.inventory.exists())) if not ok]  # fmt: skip
    if missing:
        print(f"real_rft: {', '.join(missing)} not up: run `remed stack up`", file=sys.stderr)
        return 2
    url, bootstrap = str(triton["http"]), str(kafka["bootstrap"])
    model_dir = paths.model_repo / "remed_planner"
    versions = versions_of(RealRftConfig(model_repo=paths.model_repo, triton_url=url))
    served_now = versions.served()
    if len(served_now) != 1:
        print(
            f"real_rft: Triton serves {served_now or 'nothing'}: serve one version", file=sys.stderr
        )
        return 2
    served = served_now[0]
    on_disk = {int(d.name) for d in model_dir.iterdir() if d.name.isdigit()}
    dataset = args.dataset or served_dataset(model_dir, served) or ROOT / "trainer/data/sft-v1"
    examples = held_out(dataset, args.category, args.held_out)
    out: Path = args.out.resolve()
    (out / "state").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    print(f"real_rft: served v{served}; {len(examples)} held-out {args.category} prompts from "
          f"{dataset}", file=sys.stderr)  # fmt: skip
    before, answers_before = preferred_share(url, examples)
    (out / "answers_before.json").write_text(json.dumps(answers_before, indent=2))
    print(f"real_rft: preferred form before: {before:.0%}", file=sys.stderr)

    topics = asyncio.run(create_private_topics(bootstrap, "rft"))
    topics["feedback_topic"] = topics["outcomes_topic"].replace(".outcomes", ".feedback")
    asyncio.run(create_topic(bootstrap, topics["feedback_topic"]))
    daemon_cfg = daemon_e2e.daemon_config(out, bootstrap, topics, "triton")
    trainer = start_trainer(trainer_config(out, args, bootstrap, topics, url), out)
    created: list[int] = []
    try:
        daemon, _ = daemon_e2e.start_daemon(daemon_cfg, out)
        try:
            remediator = DaemonRemediator(
                bootstrap, "triton", args.daemon_timeout_s,
                diagnoses_topic=topics["diagnoses_topic"], outcomes_topic=topics["outcomes_topic"],
            )  # fmt: skip
            scenarios = stream(args.stream_suite, args.category, args.incidents, args.others)
            summary = run_bench(scenarios, remediator, out / "stream", suite="real-rft-stream",
                                lab=lab)  # fmt: skip
        finally:
            daemon_e2e.stop_daemon(daemon)
        sent = rate(out / "stream" / "cases", args.category, daemon_cfg)
        (out / "feedback.json").write_text(json.dumps(sent, indent=2))
        if not sent:
            print("real_rft: no outcome to rate: see the stream's cases", file=sys.stderr)
            return 1
        if not any(f["playbooks"] for f in sent):
            print(f"real_rft: v{served} wrote no playbook for any incident of the stream, so "
                  "no feedback can become an example: serve a version that writes playbooks "
                  "(an SFT one) first", file=sys.stderr)  # fmt: skip
            return 1
        first_feedback = min(f["at"] for f in sent)
        rnd = wait_for_round(out, trainer, args.round_timeout_min * 60)
        rounds = len(trainer_status(out).get("rounds") or [])
        gate = rnd.get("gate") or {}
        metrics = gate.get("metrics") or {}
        for v in (metrics.get("candidate_version"), rnd.get("version")):
            if isinstance(v, int) and v not in on_disk:
                created.append(v)
        promoted = rnd.get("version") if rnd.get("status") == "promoted" else None
        after_url_version = versions.served()
        after, answers_after = preferred_share(url, examples)
        (out / "answers_after.json").write_text(json.dumps(answers_after, indent=2))
    finally:
        stop(trainer)
        if not args.keep:
            restore(versions, served, created, model_dir, out)

    ended = rnd.get("finished_at") or time.time()
    result = {
        "feedback": len(sent),
        "rounds": rounds,
        "promoted_version": promoted,
        "preferred_form_before": before,
        "preferred_form_after": after,
        "suite_before": (metrics.get("served") or {}).get("success_rate"),
        "suite_after": (metrics.get("candidate") or {}).get("success_rate"),
        "minutes": round((float(ended) - first_feedback) / 60, 2),
    }
    print()
    print("| what | value |")
    print("|---|---|")
    rows = {
        "served before": f"v{served}",
        "stream": f"{summary['recovered']}/{summary['injected']} recovered "
        f"({args.incidents} {args.category}, {args.others} others)",
        "feedback": f"{len(sent)} ({sum(f['corrected'] for f in sent)} corrected playbooks)",
        "round": f"{rnd.get('status')}: {rnd.get('reason')}",
        "served after": f"{after_url_version}",
        f"preferred form, {len(examples)} held-out {args.category}": f"{before:.0%} -> {after:.0%}",
        f"gate suite {metrics.get('row')}": f"{result['suite_before']} -> {result['suite_after']}",
        "minutes, first feedback to swap": f"{result['minutes']}",
        "benchmark minutes": f"{(time.monotonic() - started) / 60:.1f}",
        "restored": "no (--keep)"
        if args.keep
        else f"v{served} served, new versions in {out}/versions",
    }
    for k, v in rows.items():
        print(f"| {k} | {v} |")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
