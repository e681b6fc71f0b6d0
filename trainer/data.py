"""`remed train data`: expert-guided remediation traces for SFT, built from recorded evidence.

Input: evidence recorded from the live lab (`trainer/record.py`, one line per injected and
confirmed fault: every catalog probe's output, the naive attempt's reflection, the expert's
playbook). Output: `trainer/data/<name>/{train,validation,test}.jsonl` and `manifest.json`.

Every prompt is built by the daemon's own prompt builder (`remed_daemon.planner.PlanRequest`),
as the ThinkRemed loop (or the one-shot bench) would build it at that turn:

- `oneshot`: report + facts, no probes (what `remed bench --remediator model` sends);
- `probed`: report + facts + the category's catalog probes (the loop's first plan);
- `probe-request`: a category-blind report with the generic probes, where the decisive probes
  are missing: the answer is `PROBE: name` lines (the loop runs them, then asks again);
- `after-probes`: the same prompt with the requested probes' output appended, answered with
  the playbook;
- `replan`: the naive attempt (restart the service) ran and the verifier still failed: its
  reflection is the previous attempt's evidence and the answer is the expert's playbook.

Variation: six phrasing families (`trainer/phrasing.py`), blind reports, misleading hints, and
synthetic renamings (`trainer/rename.py`) of prompt and expert alike.

Splits: the test split holds out whole (service, category) pairs, the `chat` family, and the
renamings drawn from the test name pool; validation is a slice of the training records. The
manifest lists the file hashes and proves the separation (`check_manifest`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remed_daemon.agents.probe import BY_CATEGORY, CATALOG, GENERIC, catalog_for
from remed_daemon.agents.topology import Dependency, ServiceFacts
from remed_daemon.planner import PlanRequest
from trainer.phrasing import FAMILIES, misleading_hint, render
from trainer.rename import IDENTITY, Renaming

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("train", "validation", "test")
TURNS = ("oneshot", "probed", "probe-request", "after-probes", "replan")
TEST_FAMILIES = ("chat",)
# Whole (service, category) pairs the model never trains on: each category keeps other
# services in training, so what is tested is reading the facts, not a category never seen.
TEST_PAIRS = (
    ("postgresql", "cpu-stress"),
    ("checkout", "memory-stress"),
    ("cart", "network-loss"),
    ("redis", "service-down"),
    ("nginx", "config-error"),
    ("checkout", "port-conflict"),
    ("cart", "disk-io"),
)
VALIDATION_FRACTION = 0.08
MAX_PROBE_REQUESTS = 4


class DataError(ValueError):
    """Bad evidence or a dataset that breaks its own separation rules."""


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    completion: str
    turn: str
    family: str
    category: str
    service: str
    host: str
    system: str
    blind: bool
    misleading: bool
    renaming: str
    evidence: str  # "<evidence file>#<scenario id>"
    expert: str  # the expert's playbook for this incident (what evaluation compares with)
    hosts: tuple[str, ...]  # the incident's hosts, as the guard is given them
    report: dict[str, Any]  # the diagnosis report the prompt was built from

    def doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- evidence ----------------------------------------------------------------------------------


def load_evidence(path: Path) -> list[dict[str, Any]]:
    """Recorded cases of one evidence file, joined with their bench journals (confirm evidence,
    whether the expert's fix recovered). Cases the expert did not recover are left out."""
    runs = path.parent / "runs" / path.stem / "cases"
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: not JSON ({exc})") from exc
        sid = record["scenario"]["id"]
        journal_file = runs / f"{sid}.json"
        if not journal_file.is_file():
            continue  # recorded, then the run stopped before the bench journal was written
        journal = json.loads(journal_file.read_text())
        if not journal.get("recovered"):
            continue
        record["confirm_evidence"] = list(journal.get("confirmation", {}).get("evidence", []))
        record["source"] = f"{path.name}#{sid}"
        out.append(record)
    return out


def _facts(doc: Mapping[str, Any]) -> ServiceFacts:
    deps = tuple(Dependency(**d) for d in doc.get("depends_on", ()))
    return ServiceFacts(**{**doc, "depends_on": deps})


def _pair(record: Mapping[str, Any]) -> tuple[str, str]:
    s = record["scenario"]
    return (s["target"]["service"], s["category"])


# -- examples ----------------------------------------------------------------------------------


def _playbook_answer(playbook: str) -> str:
    return f"```yaml\n{playbook.rstrip()}\n```"


def _rca_paragraph(record: Mapping[str, Any]) -> str:
    """The category's root-cause paragraph for this incident, in the lab's own names."""
    from chaos.scenario import TEMPLATES, Scenario, _fields

    scenario = Scenario.parse(record["scenario"], "evidence")
    return TEMPLATES[scenario.category][1].format(**_fields(scenario))


def _report(
    record: Mapping[str, Any], family: str, *, rca: str, facts_text: str, blind: bool,
    misleading: bool, rng: random.Random,
) -> dict[str, Any]:  # fmt: skip
    s = record["scenario"]
    category, service, host = s["category"], s["target"]["service"], s["target"]["host"]
    hint = misleading_hint(category, {"service": service, "host": host}) if misleading else ""
    fields = render(
        family, category=category, summary=record["report"]["summary"], rca=rca,
        facts=facts_text, service=service, host=host,
        evidence=record.get("confirm_evidence", ()), blind=blind, hint=hint, rng=rng,
    )  # fmt: skip
    report: dict[str, Any] = {
        "schema_version": 1,
        "report_id": f"train-{s['id']}",
        "source": "trainer",
        "target": {"host": host, "service": service},
        "severity": "critical",
        **fields,
    }
    if not blind:
        report["category"] = category
    return report


def _needed_probes(category: str) -> list[str]:
    """The probes a blind incident of `category` still needs after the generic ones."""
    return [p for p in BY_CATEGORY.get(category, ()) if p not in GENERIC][:MAX_PROBE_REQUESTS]


def examples_for(
    record: Mapping[str, Any], renaming: Renaming, rng: random.Random,
    families: tuple[str, ...],
) -> Iterator[Example]:  # fmt: skip
    """The examples one recorded incident gives under one renaming."""
    s = record["scenario"]
    category = s["category"]
    facts = _facts(renaming.value(record["facts"]))
    facts_text = facts.describe()
    probes = {k: renaming.apply(v) for k, v in record["probes"].items()}
    expert = renaming.apply(record["expert"])
    renamed = dict(renaming.value(record))
    rca = renaming.apply(_rca_paragraph(record))
    system = renaming.words.get("shop", "shop")

    def make(turn: str, blind: bool, request: PlanRequest, completion: str, fam: str,
             misleading: bool) -> Example:  # fmt: skip
        prompt = request.prompt()
        digest = hashlib.sha256((prompt + "\x00" + completion).encode()).hexdigest()[:12]
        return Example(
            id=f"{s['id']}:{renaming.pool}:{turn}:{fam}:{digest}", prompt=prompt,
            completion=completion, turn=turn, family=fam, category=category,
            service=facts.name, host=facts.host, system=system, blind=blind,
            misleading=misleading, renaming=json.dumps(renaming.describe(), sort_keys=True),
            evidence=str(record["source"]), expert=expert, hosts=tuple(facts.incident_hosts),
            report=dict(request.report),
        )  # fmt: skip

    def request(report: dict[str, Any], shown: list[str], previous: list[str],
                loop: bool) -> PlanRequest:  # fmt: skip
        return PlanRequest(
            report=report, service=facts.name, host=facts.host,
            category=str(report.get("category") or ""), facts=facts_text,
            probes=[probes[n] for n in shown if n in probes], previous=previous,
            probe_names=list(CATALOG) if loop else (),
        )  # fmt: skip

    def report(blind: bool) -> tuple[dict[str, Any], str, bool]:
        fam = rng.choice(families)
        misleading = rng.random() < 0.15
        return (
            _report(renamed, fam, rca=rca, facts_text=facts_text, blind=blind,
                    misleading=misleading, rng=rng),
            fam,
            misleading,
        )

    answer = _playbook_answer(expert)
    # one-shot, as the bench's model remediator asks (category given or not)
    blind = rng.random() < 0.3
    rep, fam, mis = report(blind)
    yield make("oneshot", blind, request(rep, [], [], loop=False), answer, fam, mis)
    # the loop's first plan, with the category's probes
    rep, fam, mis = report(False)
    yield make("probed", False, request(rep, list(catalog_for(category)), [], True), answer,
               fam, mis)  # fmt: skip
    # a blind incident in the loop: the generic probes, then what the category needs
    rep, fam, mis = report(True)
    shown = list(GENERIC)
    needed = _needed_probes(category)
    if needed:
        asks = "\n".join(f"PROBE: {p}" for p in needed)
        yield make("probe-request", True, request(rep, shown, [], True), asks, fam, mis)
        shown = shown + needed
        yield make("after-probes", True, request(rep, shown, [], True), answer, fam, mis)
    else:
        yield make("probed", True, request(rep, shown, [], True), answer, fam, mis)
    # re-plan after the naive restart did not fix it
    naive = record.get("naive") or {}
    verification = naive.get("verification") or {}
    if naive.get("reflection") and verification and not verification.get("passed"):
        reflection = renaming.apply(str(naive["reflection"]))
        blind = rng.random() < 0.3
        rep, fam, mis = report(blind)
        shown = list(catalog_for("" if blind else category))
        yield make("replan", blind, request(rep, shown, [reflection], True), answer, fam, mis)


# -- the dataset ------------------------------------------------------------------------------


def _split_of(record: Mapping[str, Any], seed: int) -> str:
    if _pair(record) in TEST_PAIRS:
        return "test"
    h = int(hashlib.sha256(f"{seed}:{record['scenario']['id']}".encode()).hexdigest(), 16)
    return "validation" if (h % 10_000) / 10_000 < VALIDATION_FRACTION else "train"


def build_examples(
    records: Iterable[Mapping[str, Any]], *, seed: int = 0, train_renamings: int = 1,
) -> dict[str, list[Example]]:  # fmt: skip
    """Examples per split. Training records give examples under their own names and
    `train_renamings` renamings from the training pool (training families only) plus a test
    renaming and the held-out families for the test split; held-out pairs go wholly to test."""
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    train_families = tuple(f for f in FAMILIES if f not in TEST_FAMILIES)
    for record in records:
        rng = random.Random(f"{seed}:{record['scenario']['id']}")
        split = _split_of(record, seed)
        if split == "test":
            for renaming in (IDENTITY, Renaming.draw("test", rng)):
                splits["test"] += examples_for(record, renaming, rng, FAMILIES)
            continue
        views = [IDENTITY] + [Renaming.draw("train", rng) for _ in range(train_renamings)]
        for renaming in views:
            splits[split] += examples_for(record, renaming, rng, train_families)
        splits["test"] += examples_for(record, Renaming.draw("test", rng), rng, TEST_FAMILIES)
    return splits


def budget(
    examples: list[Example], per_turn: Mapping[str, int], *, seed: int = 0
) -> list[Example]:
    """At most `per_turn[turn]` examples of each turn kind (turns not named: all), drawn round
    robin over the (service, category) pairs in a seeded order, so a cut set still covers every
    pair and fault. A token budget, for machines where a full epoch does not fit (2 AVX2 cores
    train SmolLM2-135M at ~100 tok/s in fp32)."""
    kept: list[Example] = []
    for turn in sorted({e.turn for e in examples}):
        of_turn = [e for e in examples if e.turn == turn]
        limit = per_turn.get(turn, len(of_turn))
        groups: dict[tuple[str, str], list[Example]] = {}
        for example in of_turn:
            groups.setdefault((example.service, example.category), []).append(example)
        rng = random.Random(f"{seed}:{turn}")
        queues = [groups[key] for key in sorted(groups)]
        for queue in queues:
            rng.shuffle(queue)
        rng.shuffle(queues)
        picked: list[Example] = []
        while len(picked) < limit and any(queues):
            for queue in queues:
                if queue and len(picked) < limit:
                    picked.append(queue.pop())
        kept += picked
    order = {id(e): i for i, e in enumerate(examples)}
    return sorted(kept, key=lambda e: order[id(e)])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prompt_key(example: Mapping[str, Any]) -> str:
    return hashlib.sha256(str(example["prompt"]).encode()).hexdigest()


def write_dataset(
    name: str, evidence_files: list[Path], *, seed: int = 0, train_renamings: int = 1,
    out_root: Path = DATA_DIR, train_per_turn: Mapping[str, int] | None = None,
    validation_limit: int | None = None,
) -> Path:  # fmt: skip
    records = [r for path in evidence_files for r in load_evidence(path)]
    if not records:
        raise DataError(
            f"no usable evidence in {', '.join(map(str, evidence_files))}: record some with "
            "`remed train data record` first"
        )
    splits = build_examples(records, seed=seed, train_renamings=train_renamings)
    if train_per_turn:
        splits["train"] = budget(splits["train"], train_per_turn, seed=seed)
    if validation_limit is not None:
        splits["validation"] = splits["validation"][:validation_limit]
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, examples in splits.items():
        path = out / f"{split}.jsonl"
        path.write_text("".join(json.dumps(e.doc(), sort_keys=True) + "\n" for e in examples))
        files[split] = {"sha256": _sha(path), "examples": len(examples)}
    manifest = {
        "name": name,
        "seed": seed,
        "train_renamings": train_renamings,
        "train_per_turn": dict(train_per_turn or {}),
        "validation_limit": validation_limit,
        "evidence": {str(p.name): _sha(p) for p in evidence_files},
        "files": files,
        "held_out": {
            "pairs": [list(p) for p in TEST_PAIRS],
            "families": list(TEST_FAMILIES),
            "renaming_pool": "test",
        },
        "counts": {
            split: {
                "turn": dict(Counter(e.turn for e in examples)),
                "family": dict(Counter(e.family for e in examples)),
                "blind": sum(e.blind for e in examples),
                "misleading": sum(e.misleading for e in examples),
            }
            for split, examples in splits.items()
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    check_manifest(out)
    return out


def read_split(dataset: Path, split: str) -> list[dict[str, Any]]:
    path = dataset / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_manifest(dataset: Path) -> dict[str, Any]:
    """Fail (DataError) unless every file matches its hash and the test split is apart from
    training: no test prompt in train or validation, no held-out pair or family there, no name
    of the test renaming pool there."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    for split, entry in manifest["files"].items():
        if _sha(dataset / f"{split}.jsonl") != entry["sha256"]:
            raise DataError(f"{dataset}/{split}.jsonl does not match its manifest hash")
    test = read_split(dataset, "test")
    seen = read_split(dataset, "train") + read_split(dataset, "validation")
    test_prompts = {_prompt_key(e) for e in test}
    leaked = [e["id"] for e in seen if _prompt_key(e) in test_prompts]
    if leaked:
        raise DataError(f"{len(leaked)} test prompt(s) are also in training, e.g. {leaked[0]}")
    held = manifest["held_out"]
    pairs = {tuple(p) for p in held["pairs"]}
    for e in seen:
        words = json.loads(e["renaming"]).get("words", {})
        original = {v: k for k, v in words.items()}.get(e["service"], e["service"])
        if (original, e["category"]) in pairs:
            raise DataError(f"held-out pair ({original}, {e['category']}) in training: {e['id']}")
        if e["family"] in held["families"]:
            raise DataError(f"held-out family {e['family']!r} in training: {e['id']}")
        if json.loads(e["renaming"]).get("pool") == held["renaming_pool"]:
            raise DataError(f"a test-pool renaming in training: {e['id']}")
    return manifest
