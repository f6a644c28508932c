"""Throwaway TLS material for test and demo servers, made with the `openssl` command line: a CA,
a server certificate for 127.0.0.1 and localhost, and a client certificate, all signed by it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.errors import InfraError

DAYS = "2"


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise InfraError("openssl is not on PATH; run `make deps` (infra/install-system.sh installs it)")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InfraError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _signed(name: str, subject: str, extensions: str, folder: Path) -> None:
    """A key and a certificate for `subject`, signed by the CA in `folder`."""
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject,
             "-out", f"{name}.csr", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", DAYS, "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=folder)  # fmt: skip


def throwaway_certs(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-days", DAYS,
             "-subj", "/CN=auction-timer test CA", "-out", "ca.crt", cwd=folder)  # fmt: skip
    _signed("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            folder)  # fmt: skip
    _signed("client", "/CN=auction-timer", "extendedKeyUsage=clientAuth\n", folder)
    return TlsFiles(
        folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt", folder / "client.key"
    )
