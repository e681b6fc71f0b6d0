"""The oracle planner (`remediation.planner = "oracle"`): expert playbooks from a directory
(`agents.oracle_playbook_dir`), for running the whole loop without a model. The chaos lab
writes its experts' playbooks as such a directory (`python -m chaos.playbooks DIR`).

For category C and service S it tries `C/S.yml`, `C.yml`, `S.yml` (also `.yaml`), and fills in
the target like the static planner does, so the guard sees the literal host.
"""

from __future__ import annotations

from pathlib import Path

from remed_daemon.planner.base import PlanDraft, PlanRequest
from remed_daemon.planner.static import PLAIN_NAME, fill_target, plain_names


class OraclePlanner:
    name = "oracle"

    def __init__(self, playbook_dir: str = "") -> None:
        self.dir = Path(playbook_dir) if playbook_dir else None

    def lookup(self, category: str, service: str) -> Path | None:
        if self.dir is None:
            return None
        stems = []
        if category and PLAIN_NAME.match(category):
            stems += [f"{category}/{service}", category]
        stems.append(service)
        for stem in stems:
            for ext in (".yml", ".yaml"):
                p = self.dir / f"{stem}{ext}"
                if p.is_file():
                    return p
        return None

    async def plan(self, request: PlanRequest) -> PlanDraft:
        if not plain_names(request):
            return PlanDraft(playbook="", planner=self.name)
        if self.dir is None:
            why = "no expert playbooks: set agents.oracle_playbook_dir"
            return PlanDraft(playbook="", planner=self.name, completion=why)
        path = self.lookup(request.category, request.service)
        if path is None:
            return PlanDraft(
                playbook="",
                planner=self.name,
                completion=f"no expert playbook for {request.category}/{request.service} "
                f"in {self.dir}",
            )
        text = fill_target(path.read_text(), request)
        return PlanDraft(playbook=text, planner=self.name, completion=text)
