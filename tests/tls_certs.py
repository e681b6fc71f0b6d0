"""Test PKI made with the `openssl` CLI: a CA and certificates it signs, as PEM files.

    ca = make_ca(tmp_path, "remed-test-ca")
    server = issue(ca, tmp_path, "server", san="IP:127.0.0.1,DNS:localhost")
    client = issue(ca, tmp_path, "alertmanager", client=True)

Keys are EC P-256 and unencrypted; certificates are valid for a day.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def _run(*args: str) -> None:
    proc = subprocess.run([OPENSSL, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _key(path: Path) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def make_ca(directory: Path, name: str) -> Pem:
    """A self-signed CA `name` in `directory` (name.crt, name.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _key(key)
    _run("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "1",
         "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return Pem(cert, key)


def issue(ca: Pem, directory: Path, name: str, *, san: str = "", client: bool = False) -> Pem:
    """A leaf certificate `name` signed by `ca`: a server's (SAN required) or a client's."""
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
    lines.append(f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}")
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _key(key)
    _run("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return Pem(cert, key)
