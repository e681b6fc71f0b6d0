"""The guard: the authority on whether an LLM-written playbook may run, and with what oversight.

It decides from the playbook text and the incident's hosts only. Nothing from the alert, the
model's prose or the probes reaches it, so no text can widen what it allows (ARCHITECTURE.md,
"Safety model"). Everything it cannot judge it refuses: it fails closed.

A verdict is one of

- rejected (`allowed=False`): at least one finding is a refusal (CLI exit 1);
- allowed, risk `low`: runs automatically (exit 0);
- allowed, risk `medium`: runs `--check --diff` first, then automatically (exit 0);
- allowed, risk `high`: waits for a person's approval (exit 3).

The pieces: strict YAML loading (no aliases, anchors, merge keys, duplicate keys or unknown
tags, a size limit), a check of every play and task keyword, host patterns limited to the
incident's hosts, a module allowlist with FQCN normalisation, per-module argument rules, and the
shell policy in `guard.shell` for `command`/`shell`. Paths are classified in `guard.paths`.
Templates are resolved where the playbook itself gives their values (vars, set_fact, literal
loops), so a command hidden in a variable is judged as the command it is; any lookup, `query`,
`pipe` or sandbox escape in a template is refused wherever it appears.

How to extend: `docs/guard.md`.
"""


from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remed_daemon.guard import shell, templates
from remed_daemon.guard.keywords import (
    ALLOWED_COLLECTIONS,
    BLOCK_KEYS,
    EXPR_KEYS,
    JINJA_BLOCK,
    JINJA_PATTERNS,
    LOOP_OK,
    MAGIC_HOST_VARS,
    PLAY_KEYS,
    REFUSED_KEYS,
    TASK_KEYS,
)
from remed_daemon.guard.modules import (
    MODULE_RULES,
    REFUSED_MODULES,
    ModuleContext,
    as_text,
    normalize_module,
    truthy,
)
from remed_daemon.guard.paths import HIGH, LOW, MEDIUM, REJECT, Effects
from remed_daemon.guard.resolve import (
    FindResult,
    parse_free_form,
    registered_value,
    resolve_ref,
    substitute,
    template_refs,
)
from remed_daemon.guard.strict_yaml import YamlRefused, load_playbook
from remed_daemon.guard.verdict import (
    DEFAULT,
    GuardPolicy,
    GuardVerdict,
    Risk,
    Violation,
    dedupe,
    parse_hosts,
)


def check_playbook(
    text: str, hosts: Sequence[str] | str, policy: GuardPolicy = DEFAULT
) -> GuardVerdict:
    """Judge a playbook for the incident's hosts. Never raises for any playbook text."""
    allowed_hosts = parse_hosts(hosts)
    checker = _Checker(allowed_hosts, policy)
    try:
        checker.run(text)
    except RecursionError:
        checker.add(REJECT, "yaml.too_deep", "playbook", "nesting too deep to judge")
    except Exception as exc:  # fail closed: a guard bug must never allow a playbook
        checker.add(REJECT, "guard.internal", "playbook", f"{type(exc).__name__}: {exc}"[:200])
    return checker.verdict()




# --- the checker ----------------------------------------------------------------------------


@dataclass
class _Task:
    label: str
    data: Mapping[str, Any]
    loop_items: list[Any] | None
    loop_var: str = "item"


@dataclass
class _Checker:
    hosts: tuple[str, ...]
    policy: GuardPolicy
    found: list[tuple[int, Violation]] = field(default_factory=list)
    files: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    defs: dict[str, list[Any]] = field(default_factory=dict)
    tasks: list[_Task] = field(default_factory=list)
    play_hosts: set[str] = field(default_factory=set)
    # (task label, services it stops, services it starts), in playbook order.
    service_events: list[tuple[str, set[str], set[str]]] = field(default_factory=list)

    def add(self, level: int, rule: str, task: str, detail: str) -> None:
        self.found.append((level, Violation(rule, task, detail[:300])))

    def verdict(self) -> GuardVerdict:
        rejected = tuple(v for level, v in self.found if level >= REJECT)
        reasons = tuple(
            v for level, v in sorted(self.found, key=lambda f: -f[0]) if MEDIUM <= level < REJECT
        )
        top = max((level for level, _ in self.found if level < REJECT), default=LOW)
        risk: Risk = "high" if rejected else ("low", "medium", "high")[top]
        return GuardVerdict(
            allowed=not rejected,
            risk=risk,
            needs_approval=not rejected and top >= HIGH,
            violations=dedupe(rejected),
            reasons=dedupe(reasons),
            touched_files=frozenset(self.files),
            touched_services=frozenset(self.services),
        )

    # -- structure ---------------------------------------------------------------------------

    def run(self, text: str) -> None:
        if not isinstance(text, str):
            self.add(REJECT, "yaml.invalid", "playbook", "playbook text is not a string")
            return
        try:
            data = load_playbook(text, self.policy)
        except YamlRefused as exc:
            self.add(REJECT, exc.rule, "playbook", str(exc))
            return
        if not isinstance(data, list) or not data:
            self.add(
                REJECT, "playbook.shape", "playbook", "a playbook is a non-empty list of plays"
            )
            return
        self._scan_jinja(data, "playbook", key=None)
        for i, play in enumerate(data):
            label = f"play {i + 1}"
            if not isinstance(play, dict):
                self.add(REJECT, "playbook.shape", label, "each play is a mapping")
                continue
            self._play(play, label)
        self._collect_defs(data)
        for task in self.tasks:
            self._task_module(task)
        self._left_stopped()

    def _left_stopped(self) -> None:
        """A service stopped by one task and started by no later task stays down: high risk."""
        down: dict[str, str] = {}
        for label, stopped, started in self.service_events:
            for unit in started:
                down.pop(unit, None)
            for unit in stopped - started:
                down[unit] = label
        for unit, label in sorted(down.items()):
            self.add(HIGH, "service.left_stopped", label,
                     f"stops {unit} and no later task starts it again")  # fmt: skip

    def _keys(self, data: Mapping[str, Any], allowed: frozenset[str], label: str) -> None:
        for key in data:
            if not isinstance(key, str):
                self.add(REJECT, "playbook.unknown_key", label, f"non-string key {key!r}")
            elif key in REFUSED_KEYS:
                self.add(REJECT, REFUSED_KEYS[key], label, f"{key} is refused")
            elif key not in allowed and not key.startswith("with_"):
                self.add(REJECT, "playbook.unknown_key", label, f"unknown keyword {key!r}")

    def _common(self, data: Mapping[str, Any], label: str) -> None:
        """Keywords shared by plays, blocks and tasks."""
        if "become_user" in data and data["become_user"] != "root":
            self.add(REJECT, "privilege.become_user", label,
                     f"become_user {data['become_user']!r}: only root is allowed")  # fmt: skip
        if "become_method" in data and data["become_method"] != "sudo":
            self.add(REJECT, "privilege.become_method", label,
                     f"become_method {data['become_method']!r}: only sudo is allowed")  # fmt: skip
        if "check_mode" in data and not (data["check_mode"] is True or truthy(data["check_mode"])):
            self.add(REJECT, "controller.check_mode_off", label,
                     "check_mode: false would run the task even in the check run")  # fmt: skip
        if "connection" in data and data["connection"] not in ("ssh", "paramiko", "smart"):
            self.add(REJECT, "controller.connection", label,
                     f"connection {data['connection']!r}: only ssh")  # fmt: skip
        if "collections" in data:
            cols = data["collections"]
            if not isinstance(cols, list) or any(c not in ALLOWED_COLLECTIONS for c in cols):
                self.add(REJECT, "module.collections", label,
                         "collections changes what short module names mean")  # fmt: skip
        if "environment" in data:
            self._environment(data["environment"], label)
        if "vars" in data and not isinstance(data["vars"], dict):
            self.add(REJECT, "playbook.shape", label, "vars must be a mapping")
        if "strategy" in data and data["strategy"] not in ("linear", "free"):
            self.add(REJECT, "controller.debugger", label, f"strategy {data['strategy']!r}")
        if "async" in data and str(data.get("poll", "")) == "0":
            self.add(HIGH, "task.background", label, "async with poll 0 leaves a process behind")

    def _environment(self, env: Any, label: str) -> None:
        envs = env if isinstance(env, list) else [env]
        for e in envs:
            if not isinstance(e, dict):
                self.add(REJECT, "env.smuggle", label, "environment from a template or non-map")
                continue
            for k in e:
                if not isinstance(k, str) or shell.DANGEROUS_ENV.match(k):
                    self.add(REJECT, "env.smuggle", label,
                             f"environment sets {k!r}: changes what code runs")  # fmt: skip

    def _play(self, play: Mapping[str, Any], label: str) -> None:
        if isinstance(play.get("name"), str):
            label = f"{label} ({play['name'][:60]})"
        if any(isinstance(k, str) and normalize_module(k) in ("import_playbook", "include")
               for k in play):  # fmt: skip
            self.add(REJECT, "controller.include", label, "imports a playbook from the controller")
            return
        self._keys(play, PLAY_KEYS, label)
        self._hosts(play.get("hosts"), label)
        self._common(play, label)
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            if section not in play:
                continue
            tasks = play[section]
            if tasks is None:
                continue
            if not isinstance(tasks, list):
                self.add(REJECT, "playbook.shape", label, f"{section} must be a list")
                continue
            self._tasks(tasks, f"{section}", depth=0)

    def _hosts(self, value: Any, label: str) -> None:
        if value is None or value == "" or value == []:
            self.add(REJECT, "hosts.missing", label, "a play must name its hosts")
            return
        items = value if isinstance(value, list) else [value]
        allowed = {h.lower() for h in self.hosts}
        for item in items:
            text = as_text(item)
            if text is None:
                self.add(REJECT, "hosts.pattern", label, f"hosts entry {item!r} is not a name")
                continue
            for raw in re.split(r"[,:]", text) if "[" not in text else [text]:
                pat = raw.strip()
                low = pat.lower()
                if not pat:
                    continue
                if "{{" in pat or "{%" in pat:
                    rule, why = "hosts.templated", "a templated host pattern"
                elif low in ("localhost", "127.0.0.1", "::1", "ip6-localhost") or low.startswith(
                    "127."
                ):
                    rule, why = "controller.localhost", "the controller itself"
                elif low in ("all", "*", "ungrouped"):
                    rule, why = "hosts.all", "every host"
                elif pat.startswith("~"):
                    rule, why = "hosts.regex", "a regex host pattern"
                elif any(ch in pat for ch in "*?[]!&"):
                    rule, why = "hosts.glob", "a host pattern"
                elif low in allowed:
                    self.play_hosts.add(low)
                    continue
                else:
                    rule, why = "hosts.not_incident", "a host outside the incident"
                self.add(REJECT, rule, label, f"hosts {pat!r}: {why}; only {', '.join(self.hosts)}")

    def _tasks(self, tasks: list[Any], where: str, depth: int) -> None:
        if depth > 8:
            self.add(REJECT, "playbook.shape", where, "blocks nested too deeply")
            return
        for i, task in enumerate(tasks):
            if len(self.tasks) >= self.policy.max_tasks:
                self.add(REJECT, "playbook.too_many_tasks", where, "too many tasks")
                return
            index = f"{where}[{i}]"
            if not isinstance(task, dict):
                self.add(REJECT, "playbook.shape", index, "a task is a mapping")
                continue
            name = task.get("name")
            label = f"{name[:80]}" if isinstance(name, str) and name.strip() else index
            if "block" in task:
                self._keys(task, BLOCK_KEYS, label)
                self._common(task, label)
                for part in ("block", "rescue", "always"):
                    sub = task.get(part)
                    if sub is None:
                        continue
                    if not isinstance(sub, list):
                        self.add(REJECT, "playbook.shape", label, f"{part} must be a list")
                        continue
                    self._tasks(sub, f"{index}.{part}", depth + 1)
                continue
            self._task(task, label)

    def _task(self, task: Mapping[str, Any], label: str) -> None:
        self._common(task, label)
        for key in task:
            if isinstance(key, str) and key in REFUSED_KEYS:
                self.add(REJECT, REFUSED_KEYS[key], label, f"{key} is refused")
            if isinstance(key, str) and key.startswith("with_") and key not in LOOP_OK:
                self.add(REJECT, "controller.lookup", label,
                         f"{key} runs the {key[5:]} lookup on the controller")  # fmt: skip
        loop_items: list[Any] | None = None
        loop_key = "loop" if "loop" in task else next(
            (k for k in task if isinstance(k, str) and k in LOOP_OK), None
        )  # fmt: skip
        if loop_key is not None:
            value = task[loop_key]
            if isinstance(value, list):
                loop_items = value
                if loop_key == "with_nested" or loop_key == "with_together":
                    loop_items = None
        loop_var = "item"
        control = task.get("loop_control")
        if isinstance(control, dict) and isinstance(control.get("loop_var"), str):
            loop_var = control["loop_var"]
        self.tasks.append(_Task(label, task, loop_items, loop_var))

    # -- modules -----------------------------------------------------------------------------

    def _module_of(self, task: _Task) -> tuple[str, str, dict[str, Any]] | None:
        data = task.data
        candidates = [
            k for k in data
            if isinstance(k, str) and k not in TASK_KEYS and k not in REFUSED_KEYS
            and not k.startswith("with_") and k != "action"
        ]  # fmt: skip
        label = task.label
        if "action" in data:
            if candidates:
                self.add(REJECT, "playbook.unknown_key", label, f"action and {candidates}")
                return None
            action = data["action"]
            if isinstance(action, dict):
                name = action.get("module")
                rest = {k: v for k, v in action.items() if k != "module"}
                raw_args: Any = rest
            elif isinstance(action, str):
                name, _, raw_args = action.strip().partition(" ")
            else:
                self.add(REJECT, "task.bad_args", label, "action must be a string or mapping")
                return None
        elif "local_action" in data:
            return None
        else:
            if len(candidates) != 1:
                if not candidates:
                    self.add(REJECT, "task.no_module", label, "a task names exactly one module")
                else:
                    self.add(REJECT, "playbook.unknown_key", label,
                             f"unknown keywords or several modules: {candidates}")  # fmt: skip
                return None
            name = candidates[0]
            raw_args = data[name]
        if not isinstance(name, str) or "{{" in name:
            self.add(REJECT, "module.templated", label, "the module name comes from a template")
            return None
        short = normalize_module(name)
        if short is None:
            self.add(REJECT, "module.unknown", label,
                     f"module {name!r} is not on the allowlist (unknown collection)")  # fmt: skip
            return None
        free_form = short in ("command", "shell", "raw", "script", "meta", "include_tasks",
                              "import_tasks", "include_role", "import_role", "include",
                              "include_vars", "set_fact", "add_host", "group_by")  # fmt: skip
        args: dict[str, Any]
        if raw_args is None:
            args = {}
        elif isinstance(raw_args, dict):
            args = {str(k): v for k, v in raw_args.items()}
        elif isinstance(raw_args, str):
            if short in ("command", "shell", "raw", "script", "meta"):
                args = parse_free_form(raw_args, short)
            else:
                try:
                    from ansible.parsing.splitter import parse_kv

                    args = dict(parse_kv(raw_args, check_raw=free_form))
                except Exception:
                    self.add(REJECT, "task.bad_args", label, "module arguments do not parse")
                    return None
        else:
            self.add(REJECT, "task.bad_args", label, f"arguments of {name} must be a mapping")
            return None
        extra = data.get("args")
        if extra is not None:
            if not isinstance(extra, dict):
                self.add(REJECT, "task.bad_args", label, "args must be a mapping, not a template")
                return None
            args.update({str(k): v for k, v in extra.items()})
        return name, short, args

    def _task_module(self, task: _Task) -> None:
        found = self._module_of(task)
        if found is None:
            return
        name, short, args = found
        label = task.label
        if short in REFUSED_MODULES:
            rule, why = REFUSED_MODULES[short]
            self.add(REJECT, rule, label, f"{name}: {why}")
            return
        handler = MODULE_RULES.get(short)
        if handler is None:
            self.add(REJECT, "module.unknown", label, f"module {name!r} is not on the allowlist")
            return
        if short == "set_fact":
            return
        for variant in self._variants(args, task):
            fx = Effects()
            try:
                handler(variant, ModuleContext(frozenset(h.lower() for h in self.hosts), short, fx))
            except Exception as exc:  # a malformed argument is the playbook's problem
                fx.add(REJECT, "task.bad_args", f"{short}: {type(exc).__name__}: {exc}"[:200])
            for f in fx.findings:
                self.add(f.level, f.rule, label, f.detail)
            self.files |= fx.files
            self.services |= fx.services
            self.service_events.append((label, set(fx.stopped), set(fx.started)))

    # -- templates ---------------------------------------------------------------------------

    def _scan_jinja(self, node: Any, label: str, key: str | None, depth: int = 0) -> None:
        if depth > self.policy.max_depth:
            return
        if isinstance(node, dict):
            name = node.get("name") if isinstance(node.get("name"), str) else None
            if name and ("hosts" in node or any(k not in PLAY_KEYS for k in node)):
                label = name[:80] if "hosts" not in node else label
            for k, v in node.items():
                if isinstance(k, str):
                    self._jinja_text(k, label, expression=False)
                self._scan_jinja(v, label, k if isinstance(k, str) else None, depth + 1)
        elif isinstance(node, list):
            for v in node:
                self._scan_jinja(v, label, key, depth + 1)
        elif isinstance(node, str):
            self._jinja_text(node, label, expression=key in EXPR_KEYS)

    def _jinja_text(self, text: str, label: str, *, expression: bool) -> None:
        # The rule: the template as ansible-core's Jinja parses it (guard.templates).
        for finding in templates.judge(text, expression=expression):
            self.add(REJECT, finding.rule, label, f"{finding.detail}: {text.strip()[:80]}")
        # A second opinion only: patterns over the text, for spellings the AST walk might miss.
        parts = [text] if expression else []
        parts += [m.group(1) or m.group(2) or "" for m in JINJA_BLOCK.finditer(text)]
        if ("{{" in text or "{%" in text) and not JINJA_BLOCK.search(text):
            parts.append(text)
        for part in parts:
            for pattern, rule, why in JINJA_PATTERNS:
                if pattern.search(part):
                    self.add(REJECT, rule, label, f"{why}: {part.strip()[:80]}")
                    break

    def _collect_defs(self, data: Any) -> None:
        """Every literal value the playbook gives each variable (all of them, conservatively)."""
        unknown = object()

        def define(name: Any, value: Any) -> None:
            if isinstance(name, str):
                self.defs.setdefault(name, []).append(value)

        def walk(node: Any, depth: int = 0) -> None:
            if depth > self.policy.max_depth:
                return
            if isinstance(node, dict):
                if isinstance(node.get("vars"), dict):
                    for k, v in node["vars"].items():
                        define(k, v)
                if isinstance(node.get("register"), str):
                    define(node["register"], registered_value(node) or unknown)
                for key in ("set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"):
                    if isinstance(node.get(key), dict):
                        for k, v in node[key].items():
                            if k != "cacheable":
                                define(k, v)
                    elif key in node:
                        for k in re.findall(r"(\w+)=", str(node[key])):
                            define(k, unknown)
                for v in node.values():
                    walk(v, depth + 1)
            elif isinstance(node, list):
                for v in node:
                    walk(v, depth + 1)

        walk(data)
        for name in MAGIC_HOST_VARS:
            self.defs.setdefault(name, []).extend(sorted(self.play_hosts) or list(self.hosts))
        self._unknown = unknown

    def _variants(self, args: dict[str, Any], task: _Task) -> list[dict[str, Any]]:
        """The task's arguments with every resolvable template replaced, one dict per case."""
        defs = dict(self.defs)
        loop_ref = task.data.get("loop", task.data.get("with_items"))
        found = re.fullmatch(r"\{\{\s*(\w+)\.files\s*\}\}", loop_ref.strip()) if isinstance(
            loop_ref, str
        ) else None  # fmt: skip
        finds = [v for v in self.defs.get(found.group(1), []) if isinstance(v, FindResult)] if (
            found
        ) else []  # fmt: skip
        if task.loop_items is not None:
            defs[task.loop_var] = list(task.loop_items)
        elif finds:
            # Looping over a registered find: each item is a file matching its paths/patterns.
            defs[task.loop_var] = [{"path": p} for f in finds for p in f.globs]
        elif task.loop_var in defs:
            defs.pop(task.loop_var)
        current = [args]
        for _ in range(4):
            refs = set()
            for variant in current:
                refs |= template_refs(variant)
            resolvable = {}
            for ref in refs:
                values = resolve_ref(ref, defs, self._unknown)
                if values is not None:
                    resolvable[ref] = values
            if not resolvable:
                break
            nxt: list[dict[str, Any]] = []
            keys = sorted(resolvable)
            for variant in current:
                for combo in itertools.product(*(resolvable[k] for k in keys)):
                    nxt.append(substitute(variant, dict(zip(keys, combo, strict=True))))
                    if len(nxt) > self.policy.max_variants:
                        break
                if len(nxt) > self.policy.max_variants:
                    break
            if len(nxt) > self.policy.max_variants:
                self.add(HIGH, "jinja.too_many_cases", task.label,
                         "too many template combinations to check each one")  # fmt: skip
                break
            current = nxt
        return current


