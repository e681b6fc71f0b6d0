"""The guard's shell policy: `command`/`shell` arguments parsed like a shell, judged per program.

`parse` tokenises (quotes, escapes, substitutions, here-documents); `operands` classifies what a
command reads, writes and deletes; `files`, `network`, `processes`, `system` and `databases` hold
the per-program rules; `rules` resolves the program and dispatches. The policy imports only what
is below.
"""

from remed_daemon.guard.shell.processes import CRITICAL_SERVICES, DATA_STORES, is_data_store
from remed_daemon.guard.shell.rules import DANGEROUS_ENV, check_argv, check_script, url_is_local
from remed_daemon.guard.shell.system import CRITICAL_PACKAGES

__all__ = [
    "CRITICAL_PACKAGES", "CRITICAL_SERVICES", "DANGEROUS_ENV", "DATA_STORES", "check_argv",
    "check_script", "is_data_store", "url_is_local",
]  # fmt: skip
