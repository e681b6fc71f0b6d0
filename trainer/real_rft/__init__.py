"""Stage 3, Real-RFT online: learn from what really happened on the fleet (`remed.outcomes`)
and what operators say about it (`remed.feedback`), and serve an improved planner version only
through the gate.

Read top to bottom, the service (`remed train real-rft --config FILE`, `service.py`) is:

1. **Ingest** (`service.py`, `store.py`). Its own consumer group reads both topics; each
   message is validated against its schema, joined by incident id in SQLite under the state
   directory, and turned into examples *in the same transaction*; only then is its offset
   committed. A redelivered message (same topic/partition/offset), a repeated outcome (same
   `incident_id`) or a repeated feedback (same `feedback_id`, else the same content) counts once.
2. **Examples** (`examples.py`), each (prompt the planner saw, playbook, label), the prompt
   rebuilt from the outcome (`remed_daemon.outcomes.document.rebuild_prompt`):
   a verified attempt with `good` or no complaint is desirable (the "no complaint" kind only
   after `feedback_grace_s`, so a late `bad` can still turn it); `bad`/`unsafe` and failed,
   refused or rejected attempts are undesirable; a corrected playbook is desirable for the
   executed attempt's prompt and the executed playbook undesirable. A corrected playbook is
   judged by the guard again, against the hosts the outcome recorded: a refused one is stored
   as refused and never becomes an example, whatever the sender's CLI said.
3. **Rounds** (`rounds.py`): when `round_min_examples` new examples are ready, or the oldest
   has waited `round_max_age_s` (and at least `round_min_examples_on_age`), a round takes them,
   capped per author and category (`max_examples_per_author_per_category`: one voice is a rate,
   never a majority), trains a LoRA candidate from the served version with **KTO** (`kto.py`),
   stages it as `model_repo/remed_planner/N/` (trainer/promote.py, `stage: candidate
   (real-rft)`), evaluates it and the served version as `remed train eval` does and runs the
   stage-1 gate (`gating.py`, trainer/gate.py); only if it passes, Triton switches to it
   (`remed model load N`). A refusal is recorded with its reason, the version moves out of the
   repository, and the served version is untouched.
4. **Crash safety.** A round is a row whose examples are claimed in one transaction; a round
   found `running` at start (kill -9) runs again from the same examples, after undoing what
   the killed attempt left (a candidate loaded for its evaluation, a version staged and not
   concluded); nothing is promoted before its gate passed.

Why KTO: real feedback is unpaired. A verified recovery nobody complained about, a `bad`
verdict, a failed attempt, each is one labelled completion for one prompt, with no partner;
DPO would need a preferred and a rejected completion of the same prompt, which only corrected
playbooks give. KTO (Ethayarajh et al., 2024) takes binary desirable/undesirable labels per
completion, with the reference's KL as the baseline, and uses the pairs too (as one desirable
and one undesirable example). The reference is the served version (adapter disabled, or the
adapter it was promoted with, copied as the frozen reference).

Deviations from textbook KTO: the per-author cap is a count cap per round (trl's KTO has one
weight per class, not per example); `desirable_weight` is set from the round's class balance
as the KTO paper recommends.
"""
