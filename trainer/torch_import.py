"""Import torch in a process that may already have imported Ansible.

ansible-core 2.19 replaces `sys.intern` with a patch object (so that its tagged `str` subclasses
can be interned), and torch._dynamo registers a substitute for `sys.intern` when it is imported,
refusing anything that is not a function: `TypeError: substitute_in_graph expects a function but
got <class '...SysInternPatch'>`. The trainer's commands import the daemon (the guard, hence
Ansible) and torch in one process, in an order the CLI does not control, so the first import of
torch goes through here: it shows torch the builtin while it registers, then puts Ansible's patch
back, so both keep working.
"""

from __future__ import annotations

import sys
from types import ModuleType


def import_torch() -> ModuleType:
    """torch, with torch._dynamo imported under the builtin `sys.intern`."""
    if "torch._dynamo" in sys.modules:
        return sys.modules["torch"]
    patched = sys.intern
    builtin = getattr(type(patched), "unpatched_implementation", None)
    if builtin is not None:
        sys.intern = builtin
    try:
        import torch
        import torch._dynamo  # the import that registers the substitute
    finally:
        sys.intern = patched
    return torch
