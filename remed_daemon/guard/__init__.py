"""The guard: the authority on whether an LLM-written playbook may run, and with what oversight.

`check_playbook(text, hosts)` returns a `GuardVerdict`; nothing else is needed to use it.
How a playbook is judged, the tiers and how to extend the rules: docs/guard.md. Inside the
package, one module per job:

- `verdict`: the answer (`GuardVerdict`, `Violation`), the limits (`GuardPolicy`), hosts;
- `strict_yaml`: playbook YAML without aliases, merge keys, duplicate keys or tags;
- `keywords`: play/block/task keywords, refused ones, expression keys;
- `modules`: the module allowlist and one argument rule per module;
- `templates`: templates judged by ansible-core's Jinja parse tree;
- `resolve`: substituting the values a playbook gives its own variables;
- `paths`: where a path lives and what touching it costs;
- `shell/`: `command`/`shell` parsed like a shell, one rule per program;
- `policy`: `check_playbook`, which walks the playbook and asks the others.
"""

from remed_daemon.guard.policy import check_playbook
from remed_daemon.guard.strict_yaml import load_playbook
from remed_daemon.guard.verdict import (
    DEFAULT,
    EXIT_ALLOWED,
    EXIT_APPROVAL,
    EXIT_REJECTED,
    EXIT_USAGE,
    MALFORMED_RULES,
    GuardPolicy,
    GuardUsageError,
    GuardVerdict,
    Risk,
    Violation,
    parse_hosts,
    refused_as_dangerous,
)

__all__ = [
    "DEFAULT", "EXIT_ALLOWED", "EXIT_APPROVAL", "EXIT_REJECTED", "EXIT_USAGE", "MALFORMED_RULES",
    "GuardPolicy", "GuardUsageError", "GuardVerdict", "Risk", "Violation", "check_playbook",
    "load_playbook", "parse_hosts", "refused_as_dangerous",
]  # fmt: skip
