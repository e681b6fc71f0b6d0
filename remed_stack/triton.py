"""Triton Inference Server on 127.0.0.1 serving `model_repo/remed_planner` on CPU.

The server is the `tritonserver` binary that ships inside the `nvidia-pytriton` wheel, run
directly on the repository's model store in explicit model-control mode. Triton wants its
Python backend as a backend directory holding `python/libtriton_python.so` next to a
`triton_python_backend_stub` built for our Python version, so `up()` assembles that directory
once under `.run/triton/backends` from the wheel's files. The stub embeds libpython and imports
torch and transformers from this virtual environment, which the server's environment points it
at (PATH, LD_LIBRARY_PATH).

State under `.run/triton/`: `state.json` (the ports chosen on first start and reused after),
`tritonserver.pid`, `tritonserver.log` (this run; the previous one is `tritonserver.log.1`),
`model_versions.json` (versions chosen with `remed model load`; the last is served again after a
restart).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from remed_daemon.model_versions import ModelVersionError, ModelVersions
from remed_stack import procs
from remed_stack.paths import StackPaths

MODEL_NAME = "remed_planner"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
READY_POLL_INTERVAL_S = 0.5
HEALTH_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 10
PORT_NAMES = ("http", "grpc", "metrics")
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB_NAME = "triton_python_backend_stub"


class Triton:
    """The stack's Triton server: `up()` is idempotent, `down()` stops what `up()` started."""

    name = "triton"

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.dir = paths.component_dir(self.name)
        self.pidfile = self.dir / "tritonserver.pid"
        self.logfile = self.dir / "tritonserver.log"
        self.statefile = self.dir / "state.json"
        self.backends = self.dir / "backends"
        # The Python backend's shared-memory regions in /dev/shm carry this prefix, so the ones
        # a killed server left behind can be told apart from another stack's and removed.
        digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:10]
        self.shm_prefix = f"remed_triton_{digest}_"

    # -- public -----------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self._state()['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self._state()['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self._state()['metrics']}/metrics"

    def up(self) -> None:
        proc = procs.live_process(self.pidfile)
        if proc is not None and self._ready():
            return
        started = proc is None
        pinned = self._versions().pinned() if started else None
        if started:
            proc = self._start(load_model=pinned is None)
        try:
            if pinned is not None:
                procs.wait_until(
                    lambda: self._get_ok("/v2/health/live"), what="tritonserver (live)",
                    timeout_s=READY_TIMEOUT_S, proc=proc, logfile=self.logfile,
                    interval_s=READY_POLL_INTERVAL_S,
                )  # fmt: skip
                self._load_pinned(pinned)
            procs.wait_until(
                self._ready,
                what=f"tritonserver ({MODEL_NAME})",
                timeout_s=READY_TIMEOUT_S,
                proc=proc,
                logfile=self.logfile,
                interval_s=READY_POLL_INTERVAL_S,
            )
        except procs.StackError as exc:
            if started and proc is not None:
                # Leave no half-started server (nor its zombie) behind; its log stays.
                procs.stop(self.pidfile, timeout_s=STOP_TIMEOUT_S)
                _reap(proc.pid)
                self._remove_stale_shm()
            reason = self._last_error()
            raise procs.StackError(f"{exc}\n  {reason}" if reason else str(exc)) from None

    @property
    def versions_file(self) -> Path:
        """The history `remed model load|rollback` keeps for this server (`pinned()`)."""
        return self.dir / "model_versions.json"

    def _versions(self) -> ModelVersions:
        return ModelVersions(self.http_url, self.paths.model_repo / MODEL_NAME, self.versions_file)

    def _load_pinned(self, pinned: int) -> None:
        """Serve the version last chosen with `remed model load`/`rollback` rather than the
        newest directory, so a restart does not change (or break) what is served. If it no
        longer loads, load by the config file (the newest) and say so."""
        versions = self._versions()
        try:
            versions.load(pinned)
        except ModelVersionError as exc:
            print(f"triton: version {pinned} chosen earlier did not load ({exc}); loading the "
                  "newest version directory instead", file=sys.stderr)  # fmt: skip
            try:
                versions.load_default()
            except ModelVersionError as again:
                raise procs.StackError(f"{MODEL_NAME} did not load: {again}") from None

    def down(self) -> None:
        procs.stop(self.pidfile, timeout_s=STOP_TIMEOUT_S)
        self._remove_stale_shm()

    def status(self) -> dict[str, Any]:
        if not self.statefile.exists():
            return {"http": None, "grpc": None, "ok": False}
        ok = procs.live_process(self.pidfile) is not None and self._ready()
        return {"http": self.http_url, "grpc": self.grpc_url, "ok": ok}

    # -- internals --------------------------------------------------------------------------

    def _state(self) -> dict[str, int]:
        if self.statefile.exists():
            state: dict[str, int] = json.loads(self.statefile.read_text())
            return state
        return self._new_state()

    def _new_state(self) -> dict[str, int]:
        ports: set[int] = set()
        while len(ports) < len(PORT_NAMES):
            ports.add(procs.free_port(HOST))
        state = dict(zip(PORT_NAMES, sorted(ports), strict=True))
        self.statefile.write_text(json.dumps(state))
        return state

    def _ports_for_start(self) -> dict[str, int]:
        """The remembered ports, or new ones if something else took one since."""
        state = self._state()
        if any(procs.port_open(HOST, state[name]) for name in PORT_NAMES):
            state = self._new_state()
        return state

    def _last_error(self) -> str | None:
        """Triton's own one-line reason for exiting, from the end of this run's log."""
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines[-400:]):
            if line.startswith("error:") or "failed to load" in line:
                return line.strip()[:500]
        return None

    def _ready(self) -> bool:
        return self._get_ok("/v2/health/ready") and self._get_ok(f"/v2/models/{MODEL_NAME}/ready")

    def _get_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=HEALTH_TIMEOUT_S) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _start(self, *, load_model: bool = True) -> procs.TrackedProcess:
        server, env = self._runtime()
        self._ensure_base_model()
        self._remove_stale_shm()
        state = self._ports_for_start()
        argv = [
            str(server),
            f"--model-repository={self.paths.model_repo}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={HOST}",
            f"--http-port={state['http']}",
            f"--grpc-address={HOST}",
            f"--grpc-port={state['grpc']}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={HOST}",
            f"--metrics-port={state['metrics']}",
            # CPU only: no pinned host memory pool (it needs a CUDA driver).
            "--pinned-memory-pool-byte-size=0",
            # A model that fails to load stops the server, so `up` reports it at once.
            "--exit-on-error=true",
            # Ready means every model loaded is ready, not merely that the server started.
            "--strict-readiness=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        ]
        if load_model:
            argv.insert(3, f"--load-model={MODEL_NAME}")
        if self.logfile.exists():
            self.logfile.replace(self.logfile.with_name(self.logfile.name + ".1"))
        self.logfile.write_text(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(argv)}\n")
        return procs.spawn(argv, pidfile=self.pidfile, logfile=self.logfile, env=env)

    def _runtime(self) -> tuple[Path, dict[str, str]]:
        """The server binary and its environment; assembles the backend directory."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise procs.StackError(
                "nvidia-pytriton is not installed in this environment: "
                "run `make setup` (pip install -e '.[model]')"
            )
        pytriton = Path(next(iter(spec.submodule_search_locations)))
        bundle = pytriton / "tritonserver"
        site_packages = pytriton.parent
        server = bundle / "bin" / "tritonserver"
        pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = bundle / "python_backend_stubs" / pyver / STUB_NAME
        backend_files = [bundle / "backends" / "python" / f for f in PYTHON_BACKEND_FILES]
        for needed in (server, stub, *backend_files):
            if not needed.is_file():
                raise procs.StackError(
                    f"{needed} is missing from the nvidia-pytriton wheel; reinstall it "
                    "(pip install --force-reinstall nvidia-pytriton)"
                )

        python_dir = self.backends / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for src in (*backend_files, stub):
            _copy_if_changed(src, python_dir / src.name)

        lib_dirs = [
            sysconfig.get_config_var("LIBDIR"),  # the libpython the stub embeds
            str(site_packages / "nvidia_pytriton.libs"),
            str(bundle / "external_libs"),
        ]
        ld_path = [d for d in lib_dirs if d and Path(d).is_dir()]
        env = dict(os.environ)
        if env.get("LD_LIBRARY_PATH"):
            ld_path.append(env["LD_LIBRARY_PATH"])
        # The stub embeds Python in isolated mode: it ignores PYTHONPATH and finds its prefix by
        # looking `python3` up on PATH. With this environment's bin first, it finds the venv's
        # pyvenv.cfg and so its site-packages (torch, transformers, the editable remed).
        bin_dir = Path(sys.prefix) / "bin"
        if not (bin_dir / "python3").exists():
            bin_dir = Path(sys.executable).parent
        env.update(
            PATH=os.pathsep.join([str(bin_dir), env.get("PATH", os.defpath)]),
            LD_LIBRARY_PATH=os.pathsep.join(ld_path),
            REMED_BASE_MODEL_DIR=str(self.paths.base_model),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        env.pop("PYTHONHOME", None)
        return server, env

    def _ensure_base_model(self) -> None:
        from remed_stack.base_model import ensure_base_model, is_complete

        if not is_complete(self.paths.base_model):
            ensure_base_model(self.paths)

    def _remove_stale_shm(self) -> None:
        if procs.live_process(self.pidfile) is not None:
            return
        shm = Path("/dev/shm")
        if shm.is_dir():
            for region in shm.glob(f"{self.shm_prefix}*"):
                region.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _copy_if_changed(src: Path, dst: Path) -> None:
    """Copy `src` over `dst` unless it is already the same file (size and mtime)."""
    s = src.stat()
    try:
        d = dst.stat()
        if d.st_size == s.st_size and int(d.st_mtime) == int(s.st_mtime):
            return
    except FileNotFoundError:
        pass
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)
