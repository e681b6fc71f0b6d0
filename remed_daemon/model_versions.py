"""Which versions of remed_planner a Triton serves, and switching between them without downtime.

This module only talks HTTP to Triton's model-control API, so it manages any Triton by its URL
(`remed model --url`; the dev stack's is the umbrella command's default). A model version is a
numbered directory in the model's directory of Triton's model repository (the trainer writes new
ones: `model.py` and its modules plus `weights/` or `adapter/`). Triton runs in explicit
model-control mode, so nothing changes until we ask: `load(v)` posts the model's config to
`POST /v2/repository/models/remed_planner/load` with `version_policy` set to exactly `[v]`.
The config is the repository's `config.pbtxt` when the model directory is known here (read again
at every load, so an edited file takes effect), else the one Triton serves. Triton loads `v`
beside the version it is serving, switches new requests to it once it is ready, then unloads
the old one (after its in-flight requests finish): no downtime. A version that fails to load
leaves the old one serving, and the load call reports Triton's reason.

The order of versions served is kept in a state file (the daemon's
`<state_dir>/model_versions.json`, or the dev stack's) so `rollback()` can return to the one
before. A restarted server loads by its config file (the latest version directory); whoever
restarts it loads the last version chosen here again (`pinned()`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODEL_NAME = "remed_planner"
LOAD_TIMEOUT_S = 300.0
QUERY_TIMEOUT_S = 10.0
HISTORY_LIMIT = 20


class ModelVersionError(RuntimeError):
    """A version operation failed; the message says what was served afterwards."""


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # Triton's: READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str


@dataclass(frozen=True)
class ModelStatus:
    model: str
    served: list[int]  # READY versions
    versions: list[VersionState]  # every version Triton knows of, with its state
    on_disk: list[int]  # version directories in the model repository (when it is known)
    history: list[int]  # versions loaded through `load`, oldest first
    model_dir: str = ""  # where `on_disk` was read; "" when the repository is not known here

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ModelVersions:
    """Triton's repository API for one model, plus the history that makes rollback possible."""

    def __init__(
        self,
        http_url: str,
        model_dir: Path | None = None,
        state_file: Path | None = None,
        model: str = MODEL_NAME,
    ) -> None:
        """`http_url`: Triton's HTTP endpoint (`host:port` gets `http://`). `model_dir`: the
        model's directory in Triton's repository, when this machine sees it (versions on disk,
        `config.pbtxt`). `state_file`: the history `rollback` needs; without one, `status`
        works and `load`/`rollback` refuse."""
        url = http_url.rstrip("/")
        self.http_url = url if "://" in url else f"http://{url}"
        self.model_dir = model_dir
        self.state_file = state_file
        self.model = model

    # -- queries ----------------------------------------------------------------------------

    def on_disk(self) -> list[int]:
        """Version directories (with a model.py); empty when the model directory is unknown."""
        if self.model_dir is None:
            return []
        return sorted(
            int(p.name)
            for p in self.model_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / "model.py").is_file()
        )

    def versions(self) -> list[VersionState]:
        index = self._call("POST", "/v2/repository/index", {}, QUERY_TIMEOUT_S)
        return sorted(
            (
                VersionState(int(e["version"]), e.get("state", ""), e.get("reason", ""))
                for e in index
                if e.get("name") == self.model and str(e.get("version", "")).isdigit()
            ),
            key=lambda v: v.version,
        )

    def pinned(self) -> int | None:
        """The version last chosen with `load`/`rollback`, if its directory still exists (as
        far as this machine can tell)."""
        history = self._history()
        if history and (self.model_dir is None or history[-1] in self.on_disk()):
            return history[-1]
        return None

    def served(self) -> list[int]:
        return [v.version for v in self.versions() if v.state == "READY"]

    def status(self) -> ModelStatus:
        versions = self.versions()
        return ModelStatus(
            model=self.model,
            served=[v.version for v in versions if v.state == "READY"],
            versions=versions,
            on_disk=self.on_disk(),
            history=self._history(),
            model_dir=str(self.model_dir or ""),
        )

    # -- changes ----------------------------------------------------------------------------

    def load(self, version: int) -> None:
        """Serve exactly `version`; on failure the previously served version keeps serving."""
        self._need_history("load")
        if self.model_dir is not None and version not in self.on_disk():
            raise ModelVersionError(
                f"{self.model_dir / str(version)} is not a model version (no model.py): "
                f"versions on disk are {self.on_disk()}"
            )
        before = self.served()
        config = self._config()
        config["version_policy"] = {"specific": {"versions": [version]}}
        body = {"parameters": {"config": json.dumps(config)}}
        try:
            self._call("POST", f"/v2/repository/models/{self.model}/load", body, LOAD_TIMEOUT_S)
        except ModelVersionError as exc:
            raise ModelVersionError(
                f"version {version} failed to load; still serving {self._served_or_none()}: {exc}"
            ) from None
        history = self._history()
        if not history and before:
            history = [before[-1]]
        if not history or history[-1] != version:
            history.append(version)
        self._save_history(history[-HISTORY_LIMIT:])

    def load_default(self) -> None:
        """Load by the config file as it is (its version policy: the newest directory)."""
        self._call("POST", f"/v2/repository/models/{self.model}/load", {}, LOAD_TIMEOUT_S)

    def _config(self) -> dict[str, Any]:
        """The config file as Triton's JSON. Not the served model's config when the file is at
        hand: a load overrides the whole config, so posting the served one back silently kept
        the old settings after an operator edited config.pbtxt. Without the model directory
        (a Triton on another machine) the served config is all there is."""
        if self.model_dir is None:
            served = self._call("GET", f"/v2/models/{self.model}/config", None, QUERY_TIMEOUT_S)
            if not isinstance(served, dict):
                raise ModelVersionError(f"Triton answered no config for {self.model}: {served!r}")
            return served
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2

        text = (self.model_dir / "config.pbtxt").read_text()
        message = text_format.Parse(text, model_config_pb2.ModelConfig())
        return json_format.MessageToDict(message, preserving_proto_field_name=True)

    def rollback(self) -> int:
        """Serve the version that was served before the current one; returns it."""
        self._need_history("roll back")
        history = self._history()
        if len(history) < 2:
            raise ModelVersionError(
                f"no earlier version to roll back to (history {history}): "
                "load one with `remed model load VERSION`"
            )
        previous = history[-2]
        self.load(previous)
        # load() appended `previous` again; drop the rolled-back-from entry and that repeat.
        self._save_history(history[:-1])
        return previous

    # -- internals --------------------------------------------------------------------------

    def _served_or_none(self) -> str:
        try:
            served = self.served()
        except ModelVersionError:
            return "unknown (Triton not reachable)"
        return ", ".join(map(str, served)) if served else "nothing"

    def _need_history(self, what: str) -> None:
        if self.state_file is None:
            raise ModelVersionError(
                f"cannot {what} without a version history file: give one (remed model "
                "--state-file FILE, or --config FILE whose state_dir keeps it) so rollback "
                "knows the version served before"
            )

    def _history(self) -> list[int]:
        if self.state_file is None:
            return []
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return []
        return [int(v) for v in data.get("history", [])]

    def _save_history(self, history: list[int]) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"model": self.model, "history": history}))
        tmp.replace(self.state_file)

    def _call(self, method: str, path: str, body: Any, timeout_s: float) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.http_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise ModelVersionError(f"Triton answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ModelVersionError(
                f"cannot reach Triton at {self.http_url}: {exc}: is it running, and is this "
                "its HTTP address (remed model --url)?"
            ) from None
        return json.loads(raw) if raw.strip() else None


def format_status(status: ModelStatus) -> str:
    lines = [f"{status.model}: serving {', '.join(map(str, status.served)) or 'nothing'}"]
    for v in status.versions:
        reason = f" ({v.reason})" if v.reason else ""
        lines.append(f"  version {v.version}: {v.state}{reason}")
    lines.append(f"  on disk: {', '.join(map(str, status.on_disk)) or 'none'}")
    if status.history:
        lines.append(f"  history: {' -> '.join(map(str, status.history))}")
    return "\n".join(lines)
