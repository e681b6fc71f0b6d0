"""Which play, block and task keywords exist, which are refused, and which hold expressions."""

from __future__ import annotations

import re

# --- keywords -------------------------------------------------------------------------------

PLAY_KEYS = frozenset(
    {
        "name", "hosts", "become", "become_user", "become_method", "gather_facts",
        "gather_subset", "gather_timeout", "tasks", "pre_tasks", "post_tasks", "handlers",
        "vars", "serial", "max_fail_percentage", "any_errors_fatal", "ignore_errors",
        "ignore_unreachable", "check_mode", "diff", "tags", "environment", "force_handlers",
        "no_log", "timeout", "throttle", "order", "strategy", "run_once", "collections",
        "connection",
    }
)  # fmt: skip
TASK_KEYS = frozenset(
    {
        "name", "when", "register", "become", "become_user", "become_method", "changed_when",
        "failed_when", "ignore_errors", "ignore_unreachable", "notify", "listen", "tags",
        "loop", "loop_control", "until", "retries", "delay", "vars", "environment",
        "check_mode", "diff", "no_log", "run_once", "timeout", "throttle", "any_errors_fatal",
        "args", "async", "poll", "collections", "connection",
    }
)  # fmt: skip
BLOCK_KEYS = frozenset(
    {
        "block", "rescue", "always", "name", "when", "become", "become_user", "become_method",
        "vars", "environment", "tags", "ignore_errors", "ignore_unreachable",
        "any_errors_fatal", "check_mode", "diff", "no_log", "run_once", "timeout", "throttle",
        "notify", "collections", "connection", "max_fail_percentage",
    }
)  # fmt: skip
# Keywords refused wherever they appear, with the rule that names why.
REFUSED_KEYS = {
    "delegate_to": "controller.delegate",
    "delegate_facts": "controller.delegate",
    "local_action": "controller.local_action",
    "vars_prompt": "controller.vars_prompt",
    "vars_files": "controller.file_read",
    "roles": "controller.roles",
    "import_playbook": "controller.include",
    "include": "controller.include",
    "module_defaults": "play.module_defaults",
    "remote_user": "play.identity",
    "port": "play.identity",
    "debugger": "controller.debugger",
    "become_flags": "privilege.become",
    "become_exe": "privilege.become",
    "fact_path": "controller.file_read",
}
LOOP_OK = frozenset(
    {
        "with_items", "with_list", "with_dict", "with_indexed_items", "with_flattened",
        "with_together", "with_nested", "with_sequence", "with_subelements",
        "with_random_choice", "with_cartesian",
    }
)  # fmt: skip
ALLOWED_COLLECTIONS = frozenset({"ansible.builtin", "ansible.legacy"})
EXPR_KEYS = frozenset({"when", "changed_when", "failed_when", "until", "that", "var"})
JINJA_BLOCK = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.S)
JINJA_PATTERNS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"\b(lookup|query|q)\s*\("), "controller.lookup",
     "a lookup runs on the controller"),
    (re.compile(r"__\w+__|\bmro\s*\(|\bself\s*\."), "jinja.sandbox",
     "template sandbox escape attempt"),
    (re.compile(r"^\s*(include|import|extends|from|macro|call)\b"), "controller.include",
     "template includes or imports controller files"),
    (re.compile(r"\bhostvars\b|\bvars\s*\[|\bplay_hosts\b"), "jinja.hostvars",
     "reads variables of other hosts"),
    (re.compile(r"\|\s*(b64decode|unvault|vault|from_yaml_all)\b|\bb64decode\b|"
                r"ansible\.builtin\.\w+resolve_ref\b"), "obfuscation.decode",
     "template decodes hidden content"),
    (re.compile(r"\brange\s*\(\s*\d{5,}|\*\*\s*\d{3,}|\d{7,}\s*\*"), "jinja.resource",
     "template that exhausts memory or CPU"),
)  # fmt: skip

MAGIC_HOST_VARS = frozenset(
    {
        "inventory_hostname", "inventory_hostname_short", "ansible_host", "ansible_hostname",
        "ansible_fqdn", "ansible_nodename", "remed_host",
    }
)  # fmt: skip


