"""TLS for ``--tls``: a private CA and a server certificate made on first run in
``<data>/tls/``, with the ``openssl`` command-line tool (no Python crypto package needed).

Files: ``ca.pem`` (the CA certificate clients must trust: ``REQUESTS_CA_BUNDLE=<data>/tls/
ca.pem``; its path is printed at start-up and shown by ``/_megafs/info``), ``ca.key``,
``server.pem``, ``server.key`` (keys 0600, directory 0700) and ``hosts`` (the names the server
certificate covers; a new certificate is issued by the same CA when they change).  Keys are
P-256; the server certificate names 127.0.0.1, ::1, localhost, the ``--host`` address and
every ``--tls-name`` (e.g. ``g.api.mega.co.nz`` for a client that cannot be given another API
URL and reaches this server through a proxy; ``scripts/bench`` runs rclone that way).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 825          # the longest validity browsers and macOS accept for a server cert
KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
DEFAULT_NAMES = ("127.0.0.1", "::1", "localhost")
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OPENSSL_TIMEOUT = 60


class TlsError(RuntimeError):
    """The certificate could not be made (no ``openssl``, or it failed)."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def _names(host: str, extra: tuple[str, ...] = ()) -> list[str]:
    names = list(DEFAULT_NAMES)
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if host and not unspecified and host not in names:
        names.append(host)
    names.extend(name for name in extra if name not in names)
    return names


def _san(names: list[str]) -> str:
    out = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            out.append("IP:" + name)
        except ValueError:
            out.append("DNS:" + name)
    return ",".join(out)


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise TlsError("--tls needs the openssl command (Debian: apt-get install openssl)")
    try:
        subprocess.run([exe, *args], check=True, capture_output=True, timeout=OPENSSL_TIMEOUT)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip()
        raise TlsError("openssl %s failed: %s" % (args[0], detail[-300:])) from None


def ensure_certificates(data_dir: Path, host: str, extra_names: tuple[str, ...] = ()) -> TlsFiles:
    """The CA and server certificate in ``data_dir/tls``, made if missing or outdated.

    The certificate names ``DEFAULT_NAMES``, ``host`` (unless it is a wildcard address) and
    ``extra_names`` (DNS names or IP addresses); raises ``TlsError`` if ``openssl`` fails."""
    tls_dir = Path(data_dir) / "tls"
    try:
        tls_dir.mkdir(mode=PRIVATE_DIR, parents=True)
        os.chmod(tls_dir, PRIVATE_DIR)          # made here: 0700 whatever the umask
    except FileExistsError:
        pass                                    # not ours to chmod (issue 20); keys are 0600
    files = TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server.key")
    ca_key = tls_dir / "ca.key"
    if not files.ca.exists() or not ca_key.exists():
        _openssl("req", "-x509", *KEY_ARGS, "-keyout", str(ca_key), "-out", str(files.ca),
                 "-days", str(CA_DAYS), "-subj", "/CN=megafs serve local CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        files.cert.unlink(missing_ok=True)
        log.info("made a new TLS certificate authority: %s", files.ca)
    names = _names(host, tuple(extra_names))
    hosts_file = tls_dir / "hosts"
    current = hosts_file.read_text().split() if hosts_file.exists() else []
    if not files.cert.exists() or not files.key.exists() or current != names:
        with tempfile.TemporaryDirectory(dir=tls_dir) as tmp:
            csr, ext = Path(tmp) / "server.csr", Path(tmp) / "ext.cnf"
            ext.write_text("subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\n"
                           "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                           "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
                           % _san(names))
            _openssl("req", *KEY_ARGS, "-keyout", str(files.key), "-out", str(csr),
                     "-subj", "/CN=%s" % names[-1])
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey",
                     str(ca_key), "-CAcreateserial", "-out", str(files.cert), "-days",
                     str(SERVER_DAYS), "-extfile", str(ext))
        hosts_file.write_text(" ".join(names) + "\n")
        log.info("made a TLS server certificate for %s", ", ".join(names))
    for key in (ca_key, files.key):
        os.chmod(key, PRIVATE_FILE)
    return files
