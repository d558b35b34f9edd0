"""Test support: run the real local server (``megafs serve``) as a subprocess on 127.0.0.1.

``ServerProcess`` starts ``python -m megafs serve --port 0 --data DIR``, reads the API base URL
from the first stdout line, and can be stopped and restarted on the same port and data (outage
tests).  It runs with the server's strict defaults (hashcash on login, wait URLs on their own
port, a POST after an upload's completion answered -4, `p` into a deleted folder into the
Rubbish Bin) except for the easiness of the login challenge (``SUITE_EASINESS``, see below;
``hashcash_easiness=None`` keeps the server's 180); ``extra_args`` adds command-line options.
``tls=True`` adds ``--tls``: `u`/`g` with `ssl` get https transfer URLs signed by the CA in
``ca_file``; ``tls="api"`` adds ``--tls-api``: the API is https too, so megafs' client (which
asks `ssl: 2` when its API URL is https) transfers over TLS.  ``client_env()`` is the
environment a client (or mount) process needs to trust the CA, and ``trust_ca(monkeypatch)``
the same for the test process.  Faults and policies are set at run
time through the control endpoints ``POST {url}_megafs/faults`` and ``.../options``, which
(like ``GET .../mail``) need the control token the server writes to ``DATA/control-token``:
``control_headers()`` has it (``megafs/server/web/guard.py``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from megafs.server.datadir import TOKEN_HEADER, read_token

from . import logs

ROOT = Path(__file__).resolve().parent.parent.parent
# Every new account (`up`) and login (`us`) of the suite goes through the 402 proof-of-work
# handshake, at an easiness that costs about 3.3 SHA-256 passes over 12 MiB (~10 ms on two
# cores) instead of the server's default 180 (~310 passes: 2 s per login with a one-core
# solver, 7 of the suite's 13.5 minutes for its ~240 logins) or the real service's 100
# (~57,000 passes, 3 minutes).  Until `up` was challenged too (issue 19) it was 200 (~15
# passes a login).  Tests of the real cost pass ``hashcash_easiness=None`` (the server
# default).
SUITE_EASINESS = 230


class ServerProcess:
    def __init__(self, data_dir: Path, *, port: int = 0, extra_args: list[str] | None = None,
                 log_path: Path | None = None, tls: bool | str = False,
                 hashcash_easiness: int | None = SUITE_EASINESS) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.extra_args = list(extra_args or [])
        if tls:
            self.extra_args.append("--tls-api" if tls == "api" else "--tls")
        if hashcash_easiness is not None and "--hashcash-easiness" not in self.extra_args:
            self.extra_args += ["--hashcash-easiness", str(hashcash_easiness)]
        self.tls = tls
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / (
            self.data_dir.name + "-server.log")
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        cmd = [sys.executable, "-m", "megafs", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--data", str(self.data_dir), "-v"] + self.extra_args
        log = open(self.log_path, "ab")
        logs.watch(self.log_path)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        deadline = time.monotonic() + timeout
        line = b""
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            chunk = self.proc.stdout.readline()
            if chunk:
                line += chunk
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.02)
        if not line.endswith(b"\n"):
            self.stop()
            raise RuntimeError("megafs serve did not print its URL; log: %s"
                               % self.log_path.read_text(errors="replace")[-2000:])
        self.url = line.decode().strip()
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        self._info = None
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        return code

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    # --- control endpoint -------------------------------------------------------------------
    def control_headers(self) -> dict:
        """The headers a control request needs: the token (read now: a restart makes a new
        one) and the JSON content type."""
        return {TOKEN_HEADER: read_token(self.data_dir), "Content-Type": "application/json"}

    def control(self, path: str, payload) -> dict:
        resp = requests.post(self.url + "_megafs/" + path, data=json.dumps(payload), timeout=10,
                             verify=self._verify(), headers=self.control_headers())
        resp.raise_for_status()
        return resp.json()

    def mail(self) -> list:
        """The mail the server kept (``GET _megafs/mail``, with the control token)."""
        resp = requests.get(self.url + "_megafs/mail", timeout=10, verify=self._verify(),
                            headers=self.control_headers())
        resp.raise_for_status()
        return resp.json()

    def _verify(self) -> str | bool:
        """requests' ``verify`` for the control endpoints (``--tls-api`` serves them https);
        an explicit path wins over the environment's REQUESTS_CA_BUNDLE only per request."""
        return str(self.data_dir / "tls" / "ca.pem") if self.url.startswith("https") else True

    def info(self) -> dict:
        """The listeners' base URLs (``api``, ``wait``, ``secure_transfers``) and ``ca_file``."""
        if getattr(self, "_info", None) is None:
            resp = requests.get(self.url + "_megafs/info", timeout=10, verify=self._verify())
            resp.raise_for_status()
            self._info = resp.json()
        return dict(self._info)

    @property
    def ca_file(self) -> str | None:
        return self.info()["ca_file"]

    def client_env(self, base: dict | None = None) -> dict:
        """An environment for a client process: trusts the server's CA when it has one."""
        env = dict(os.environ if base is None else base)
        if self.ca_file:
            env["REQUESTS_CA_BUNDLE"] = self.ca_file
        return env

    def trust_ca(self, monkeypatch) -> None:
        """Make this test process (requests and megafs' own HTTP pool) trust the server's CA."""
        if self.ca_file:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", self.ca_file)

    def options(self, changes: dict | None = None) -> dict:
        """Change run-time policies (``megafs/server/config.py`` Policy); return them all."""
        if changes is None:
            resp = requests.get(self.url + "_megafs/options", timeout=10, verify=self._verify())
            resp.raise_for_status()
            return resp.json()
        return self.control("options", changes)

    def stats(self) -> dict:
        resp = requests.get(self.url + "_megafs/stats", timeout=10, verify=self._verify())
        resp.raise_for_status()
        return resp.json()

    def faults(self, rules: list[dict]) -> dict:
        """Replace the active fault rules."""
        return self.control("faults", {"rules": rules})

    def clear_faults(self) -> dict:
        return self.faults([])

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
