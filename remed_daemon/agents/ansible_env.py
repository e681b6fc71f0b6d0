"""One hermetic configuration for every ansible-core process remed starts.

ansible-core reads its settings from `ANSIBLE_*` variables and from the first `ansible.cfg` it
finds (`$ANSIBLE_CONFIG`, the working directory, `~/.ansible.cfg`, `/etc/ansible/ansible.cfg`),
and plugins from under `~/.ansible`. A daemon that inherited any of those would run playbooks
with settings nobody reviewed: a `remote_user`, `ssh_args` without host-key checking, extra
Jinja extensions or filter plugins that the guard (which judges templates with ansible-core's
defaults, in its own process) never saw. So every ansible-core child of remed gets:

- `ANSIBLE_CONFIG`: a remed-owned, empty `ansible.cfg` in the run's private directory (the first
  place ansible-core looks, so no other file is read);
- `ANSIBLE_HOME` and `ANSIBLE_LOCAL_TEMP` in that directory too, so plugin paths default to an
  empty private tree and nothing is written under the home directory;
- no inherited `ANSIBLE_*` variable except the collections path (where the modules the guard
  allows by FQCN live; when it is unset, the default one, resolved against the real
  `~/.ansible`, so `ansible-galaxy collection install` keeps working).

Settings remed wants (host-key checking, ssh arguments) are set by the caller, as variables, on
top of these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Inherited settings that say where modules and plugins are installed, not how they behave.
PASS_ENV = ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS")
_CONFIG_TEXT = (
    "# Written by remed: ansible-core runs with its defaults here, the settings the guard\n"
    "# judges playbooks with. remed sets what it needs as ANSIBLE_* variables instead.\n"
)


def inherited(name: str) -> bool:
    """Whether an inherited variable would change how ansible-core behaves (and is dropped)."""
    return name.startswith("ANSIBLE_") and name not in PASS_ENV


def settings(private_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Create `private_dir/ansible.cfg`, `home/` and `tmp/`; return the `ANSIBLE_*` variables
    that point ansible-core at them (and at the collections path of `base`, default
    `os.environ`)."""
    base = os.environ if base is None else base
    private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = private_dir / "ansible.cfg"
    config.write_text(_CONFIG_TEXT)
    home = private_dir / "home"
    tmp = private_dir / "tmp"
    home.mkdir(exist_ok=True, mode=0o700)
    tmp.mkdir(exist_ok=True, mode=0o700)
    out = {
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(tmp),
    }
    if not any(base.get(k) for k in PASS_ENV):
        # ansible-core's default, but under the real ANSIBLE_HOME rather than the private one.
        real_home = base.get("ANSIBLE_HOME") or os.path.join(
            base.get("HOME") or os.path.expanduser("~"), ".ansible"
        )
        out["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(
            (os.path.join(real_home, "collections"), "/usr/share/ansible/collections")
        )
    return out


def environ(
    private_dir: Path, extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A whole environment for an ansible-core child: `base` (default `os.environ`) without
    its `ANSIBLE_*` settings, plus `settings(private_dir)`, plus `extra` (remed's own)."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not inherited(k)}
    env.update(settings(private_dir, base))
    env.update(extra or {})
    return env
