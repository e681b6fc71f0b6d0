"""The daemon's commands: `remed serve`, `remed approve|reject`, `remed config check` and
`remed model`. Each parses its flags and calls into `remed_daemon`."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remed_daemon.config import Config
    from remed_daemon.model_versions import ModelVersions

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _serve(args: argparse.Namespace) -> int:
    from remed_daemon.app import serve

    return serve(Path(args.config) if args.config else None)


def _daemon_url(cfg: Config, port: int) -> str:
    """The daemon's base URL from its [http] keys: https when it serves TLS; a wildcard listen
    address is reached on loopback (and must be a name or IP in its certificate)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.http.host, cfg.http.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if cfg.http.tls_certfile else "http"
    return f"{scheme}://{host}:{port}"


def _client_tls(args: argparse.Namespace, cfg: Config) -> ssl.SSLContext:
    """Verification of an https:// daemon: its certificate chains to --cafile (else
    http.tls_server_cafile, else the system CA store) and names the URL's host; --certfile and
    --keyfile are the client certificate a daemon with http.tls_client_cafile (mTLS) needs."""
    cafile = args.cafile or cfg.http.tls_server_cafile or None
    where = "--cafile" if args.cafile else "http.tls_server_cafile"
    try:
        ctx = ssl.create_default_context(cafile=cafile)  # verify chain and host name
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"{where} {cafile!r}: cannot load it as a PEM CA certificate ({exc}); give the CA "
            "that signed the daemon's http.tls_certfile"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.keyfile and not args.certfile:
        raise ValueError("--keyfile needs --certfile (the client certificate it belongs to)")
    if args.certfile:
        try:
            ctx.load_cert_chain(args.certfile, args.keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"--certfile {args.certfile!r} / --keyfile {args.keyfile or args.certfile!r}: "
                f"cannot load the client certificate and its key ({exc})"
            ) from None
    return ctx


def _unreachable(exc: Exception, url: str, args: argparse.Namespace, cfg: Config) -> str:
    """What a failed connection means, and what to do about it."""
    import urllib.error

    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        if reason.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            return (
                f"the daemon's certificate at {url} is not valid for that host "
                f"({reason.verify_message}): pass --url with a host name or IP address the "
                "certificate names (its subjectAltName)"
            )
        trusted = args.cafile or cfg.http.tls_server_cafile or "the system CA store"
        return (
            f"the daemon's certificate at {url} does not verify against {trusted} "
            f"({reason.verify_message}): pass --cafile (or set http.tls_server_cafile) with "
            "the CA that signed the daemon's http.tls_certfile"
        )
    if isinstance(reason, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(reason):
        return f"{url} does not speak TLS: use --url http://... (is http.tls_certfile set?)"
    hint = ""
    if url.startswith("https://") and cfg.http.tls_client_cafile and not args.certfile:
        hint = (
            "; the daemon asks for a client certificate (http.tls_client_cafile): pass "
            "--certfile and --keyfile"
        )
    elif url.startswith("http://") and cfg.http.tls_certfile:
        hint = "; the daemon serves HTTPS (http.tls_certfile): use --url https://..."
    return f"cannot reach the daemon at {url}: {reason}{hint}"


def _decide(args: argparse.Namespace) -> int:
    """`remed approve|reject ID`: the daemon's approval endpoint, with its own token, over
    HTTPS (verified) when the daemon serves TLS."""
    from remed_daemon import config as config_mod
    from remed_daemon.agents.approvals import request_decision
    from remed_daemon.errors import ConfigError

    try:
        cfg = config_mod.load(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"remed {args.command}: {exc}", file=sys.stderr)
        return 2
    token = cfg.agents.approval_token.reveal()
    if not token:
        print(
            f"remed {args.command}: no approval token: set agents.approval_token in the config "
            "or REMED_AGENTS_APPROVAL_TOKEN_FILE",
            file=sys.stderr,
        )
        return 2
    url = args.url
    if not url:
        port = cfg.http.port
        if not port:  # http.port = 0: the daemon wrote the port it got into the state dir
            try:
                port = int((cfg.state_dir / "http.port").read_text())
            except (OSError, ValueError):
                print(f"remed {args.command}: http.port = 0 and no {cfg.state_dir}/http.port: "
                      "is the daemon running? pass --url", file=sys.stderr)  # fmt: skip
                return 1
        url = _daemon_url(cfg, port)
    try:
        tls = _client_tls(args, cfg) if url.startswith("https://") else None
    except ValueError as exc:
        print(f"remed {args.command}: {exc}", file=sys.stderr)
        return 2
    by = args.by or os.environ.get("SUDO_USER") or os.environ.get("USER") or "cli"
    try:
        status, answer = request_decision(
            url, token, args.incident_id, args.command == "approve", by, args.plan_sha256 or "",
            ssl_context=tls,
        )  # fmt: skip
    except (OSError, http.client.HTTPException) as exc:
        print(f"remed {args.command}: {_unreachable(exc, url, args, cfg)}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"remed {args.command}: {status}: {answer.get('error', answer)}", file=sys.stderr)
        return 1
    print(f"{args.incident_id}: {answer.get('decision')} by {answer.get('by', by)}")
    return 0


def _inventory_problems(cfg: Config, doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the inventory `cfg` names, read by ansible-core, and of the
    topology's hosts against it; `doc` gets {"inventory": {"path", "hosts"}}."""
    import yaml

    from remed_daemon.agents import topology
    from remed_daemon.agents.inventory import InventoryError, load_inventory

    key = "remediation.inventory"
    if not cfg.remediation.inventory:
        return [], [f"{key} is not set: nothing can be probed or applied (shadow mode only)"]
    doc["inventory"] = {"path": cfg.remediation.inventory, "hosts": {}}
    try:
        inv = load_inventory(cfg.remediation.inventory, max_age_s=0)
    except InventoryError as exc:
        return [f"{key}: {exc}"], []
    doc["inventory"]["hosts"] = {name: h.address for name, h in sorted(inv.items())}
    errors = [
        f"{key}: host {name!r} does not resolve: {why}; fix its variables in {inv.path}"
        for name, why in sorted(inv.errors.items())
    ]
    if not inv and not inv.errors:
        errors.append(f"{key}: {inv.path} has no hosts; list the hosts remed remediates there")
    warnings = [
        f"{key}: host {h.name!r} uses connection {h.connection!r}: remed's probes, snapshots "
        "and verification reach hosts over SSH only"
        for h in inv.values()
        if not h.over_ssh
    ]
    if inv.warnings:
        warnings.append(f"{key}: ansible-core said: {inv.warnings}")
    if cfg.agents.topology_file:
        try:
            services = topology.load(cfg.agents.topology_file)
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
            errors.append(f"agents.topology_file {cfg.agents.topology_file!r}: {exc}")
            return errors, warnings
        for host in sorted({s.host for s in services.values()} - set(inv) - set(inv.errors)):
            names = ", ".join(sorted(n for n, s in services.items() if s.host == host))
            errors.append(
                f"agents.topology_file: host {host!r} (services: {names}) is not in the "
                f"inventory {inv.path}; add it there, or fix the topology"
            )
    return errors, warnings


def _config_check(args: argparse.Namespace) -> int:
    """`remed config check FILE`: the config as `remed serve` loads it, then the Ansible
    inventory it names (remediation.inventory) as ansible-core reads it, every host resolved;
    with agents.topology_file, every host a service runs on must be in that inventory. Exit 0
    when all is well, 1 when something is broken (each problem printed, naming the key)."""
    from remed_daemon import config as config_mod
    from remed_daemon.errors import ConfigError

    doc: dict[str, Any] = {"config": args.file}
    errors: list[str] = []
    warnings: list[str] = []
    try:
        cfg = config_mod.load(Path(args.file))
    except ConfigError as exc:
        errors.append(str(exc))
    else:
        errors, warnings = _inventory_problems(cfg, doc)
        from remed_cli.config_view import effective  # every key, its origin, secrets masked

        doc["effective"] = effective(cfg, Path(args.file))
    doc.update(ok=not errors, errors=errors, warnings=warnings)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0 if not errors else 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not errors:
        hosts = doc.get("inventory", {}).get("hosts", {})
        print(f"{args.file}: ok" + (f" (inventory: {len(hosts)} hosts)" if hosts else ""))
    if "effective" in doc:
        from remed_cli.config_view import format_effective

        print("effective values (secrets masked; the origin unless default):")
        print(format_effective(doc["effective"]))
    return 0 if not errors else 1


def _model_versions(args: argparse.Namespace) -> ModelVersions:
    """The Triton `remed model` manages: `--url` (with `--model-repo` and `--state-file` when
    given), else `remediation.triton_url` and `<state_dir>/model_versions.json` of `--config`,
    else the dev stack's Triton with the checkout's model repository."""
    from remed_daemon import config as config_mod
    from remed_daemon.model_versions import MODEL_NAME, ModelVersions

    url: str = args.url or ""
    model_dir: Path | None = Path(args.model_repo) if args.model_repo else None
    state_file: Path | None = Path(args.state_file) if args.state_file else None
    if args.config:
        cfg = config_mod.load(Path(args.config))
        url = url or cfg.remediation.triton_url
        state_file = state_file or cfg.state_dir / "model_versions.json"
    if not url:
        try:
            from remed_stack.paths import StackPaths
            from remed_stack.triton import Triton
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "remed_stack":
                raise
            raise ValueError(
                "which Triton? pass --url (its HTTP address, e.g. http://triton:8000) or "
                "--config (the daemon's remediation.triton_url); the dev stack's is the default "
                "only in the repository checkout"
            ) from None
        paths = StackPaths.from_env()
        triton = Triton(paths)
        url = triton.http_url
        model_dir = model_dir or paths.model_repo / MODEL_NAME
        state_file = state_file or triton.versions_file
    return ModelVersions(url, model_dir, state_file)


def _model(args: argparse.Namespace) -> int:
    from remed_daemon.errors import ConfigError
    from remed_daemon.model_versions import ModelVersionError, format_status

    try:
        versions = _model_versions(args)
    except (ConfigError, ValueError) as exc:
        print(f"remed model {args.model_action}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.model_action == "load":
            versions.load(args.version)
            print(f"{versions.model}: now serving version {args.version}")
        elif args.model_action == "rollback":
            print(f"{versions.model}: rolled back to version {versions.rollback()}")
        else:
            status = versions.status()
            print(json.dumps(status.to_json()) if args.json else format_status(status))
            return 0 if status.served else 1
    except ModelVersionError as exc:
        print(f"remed model {args.model_action}: {exc}", file=sys.stderr)
        return 1
    return 0


def add_serve(sub: Subparsers) -> None:
    serve = sub.add_parser("serve", help="run the daemon (intakes, journal, remediation)")
    serve.add_argument("--config", help="TOML config file (systemd/remed.toml.example)")
    serve.set_defaults(func=_serve)


def add_decide(sub: Subparsers) -> None:
    for action, help_text in (
        ("approve", "approve a high-risk plan waiting in awaiting_approval"),
        ("reject", "reject a high-risk plan waiting in awaiting_approval"),
    ):
        decide = sub.add_parser(action, help=help_text)
        decide.add_argument("incident_id", metavar="ID", help="the incident id")
        decide.add_argument("--config", help="the daemon's TOML config (URL and approval token)")
        decide.add_argument("--url", help="the daemon's HTTP base URL (default: from config)")
        decide.add_argument("--by", help="who decides (default: $SUDO_USER or $USER)")
        decide.add_argument("--plan-sha256", help="approve only this exact plan (GET /approvals)")
        decide.add_argument(
            "--cafile",
            help="PEM CA that signed the daemon's certificate (https; default "
            "http.tls_server_cafile, else the system CA store)",
        )
        decide.add_argument("--certfile", help="client certificate (PEM) for an mTLS daemon")
        decide.add_argument("--keyfile", help="the client certificate's key (PEM)")
        decide.set_defaults(func=_decide)


def add_config(sub: Subparsers) -> None:
    config = sub.add_parser("config", help="check a daemon config before serving it")
    config_sub = config.add_subparsers(dest="config_action", required=True)
    config_check = config_sub.add_parser(
        "check", help="load FILE as `remed serve` would, and the Ansible inventory it names"
    )
    config_check.add_argument("file", metavar="FILE", help="TOML config file")
    config_check.add_argument("--json", action="store_true", help="the result as JSON")
    config_check.set_defaults(func=_config_check)


def add_model(sub: Subparsers) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--url",
        help="Triton's HTTP URL (default: remediation.triton_url of --config, else the dev "
        "stack's Triton)",
    )
    where.add_argument("--config", help="the daemon's TOML config (triton_url, state_dir)")
    where.add_argument(
        "--model-repo",
        metavar="DIR",
        help="the model's directory in Triton's model repository (version directories and "
        "config.pbtxt; default with the dev stack: model_repo/remed_planner); without it the "
        "config Triton serves is reused and versions on disk are not listed",
    )
    where.add_argument(
        "--state-file",
        metavar="FILE",
        help="the version history rollback reads (default: <state_dir>/model_versions.json of "
        "--config, else the dev stack's)",
    )
    model = sub.add_parser("model", help="remed_planner versions served by Triton")
    model_sub = model.add_subparsers(dest="model_action", required=True)
    model_status = model_sub.add_parser(
        "status", parents=[where], help="versions served, on disk, and history"
    )
    model_status.add_argument("--json", action="store_true", help="status as JSON")
    model_load = model_sub.add_parser(
        "load", parents=[where], help="serve VERSION (no downtime; old on failure)"
    )
    model_load.add_argument("version", type=int, metavar="VERSION", help="version directory")
    model_sub.add_parser(
        "rollback", parents=[where], help="serve the version served before the current one"
    )
    model.set_defaults(func=_model)
