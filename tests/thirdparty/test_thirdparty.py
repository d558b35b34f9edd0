"""Interoperability: an independent MEGA client from PyPI (async-mega-py 2.5.0, not written here)
against ``megafs serve``.

``tests/thirdparty/driver.py`` runs in its own virtualenv (``$MEGAFS_THIRDPARTY_PYTHON``, made by
scripts/test) and uses only that library's public API: anonymous login, upload, link export,
and download of the link with the library's own meta-MAC check.  This test then checks the
bytes round-tripped, and that our own crypto decrypts and verifies what the library uploaded,
fetched from our server as ciphertext: the server holds ciphertext only, and our crypto and
an independent implementation agree on the format.  The account tests do the same for an
account made by ``megafs signup``: the library logs in with email and password (v2 key
derivation, RSA ``csid``), and both clients see and download each other's files.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megafs import crypto
from megafs.api import links
from megafs.api.client import MegaClient
from helpers.rawapi import Api, decrypt_and_verify, plaintext
from helpers.server import ROOT, ServerProcess

DRIVER = Path(__file__).resolve().parent / "driver.py"


def thirdparty_python() -> str:
    python = os.environ.get("MEGAFS_THIRDPARTY_PYTHON") or str(
        ROOT / ".venv-thirdparty" / "bin" / "python")
    if not Path(python).exists():
        pytest.skip("no third-party client virtualenv: run the suite with scripts/test")
    return python


def run_driver(url: str, workdir: Path, files: list[Path]) -> dict:
    proc = subprocess.run([thirdparty_python(), str(DRIVER), url, str(workdir / "out")]
                          + [str(f) for f in files], capture_output=True, text=True,
                          timeout=240, cwd=workdir)
    assert proc.returncode == 0, "driver failed:\n" + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_async_mega_py_uploads_exports_and_downloads(tmp_path):
    files = {"multi-chunk.bin": plaintext(1_300_007, seed=41),
             "small file.txt": b"hello from a third-party client\n",
             "empty.dat": b""}
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
    # The library must also get past a login proof-of-work challenge, as on the real service.
    hashcash = json.dumps({"where": "cs", "hashcash": True, "count": 1})
    with ServerProcess(tmp_path / "server-data", extra_args=["--fault", hashcash]) as srv:
        result = run_driver(srv.url, tmp_path, paths)
        assert sorted(result["listed"]) == sorted(files)
        fired = srv.control("faults", {"rules": []})
        api = Api(srv.url)
        for item in result["files"]:
            original = files[item["name"]]
            # 1. the bytes survived upload, export and download through the library
            assert Path(item["downloaded"]).read_bytes() == original
            # 2. our parser and crypto agree with the library's link and ciphertext
            link = links.parse_link(item["link"])
            info = api.call({"a": "g", "g": 1, "p": link.handle})
            assert info["s"] == len(original)
            ciphertext = api.download(info["g"])
            if original:
                assert ciphertext != original
            key = crypto.FileKey.unpack(link.key)
            assert decrypt_and_verify(key, ciphertext) == original
            name = crypto.decrypt_attr(crypto.b64decode(info["at"]), link.key)["n"]
            assert name == item["name"]
        # 3. what the server stores is ciphertext only
        for blob in (srv.data_dir / "blobs").iterdir():
            content = blob.read_bytes()
            assert b"hello from a third-party client" not in content
            if len(content) > 4096:
                assert files["multi-chunk.bin"][:4096] not in content
    log = srv.log_path.read_text(errors="replace")
    assert " ERROR " not in log and "Traceback" not in log
    assert fired["fired"].get("hashcash") == 1


def megafs_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    full.pop("MEGAFS_API", None)
    return subprocess.run([sys.executable, "-m", "megafs", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_account_made_by_megafs_signup_is_shared_with_async_mega_py(tmp_path):
    """An account registered with `megafs signup` logs in with email and password in the
    independent client, which sees and downloads megafs' upload; its own upload is then seen
    and downloaded (MAC-checked) by megafs."""
    email, password = "Shared.Account@example.com", "a passphrase for both clients"
    env = {"MEGAFS_PASSWORD": password}
    mine = tmp_path / "from-megafs.bin"
    mine.write_bytes(plaintext(700_001, seed=7))
    theirs = tmp_path / "from-thirdparty.bin"
    theirs.write_bytes(plaintext(300_017, seed=8))
    with ServerProcess(tmp_path / "server-data") as srv:
        common = ["--api", srv.url, "--state-dir", str(tmp_path / "state")]
        start = megafs_cli("signup", email, *common, env=env)
        assert start.returncode == 0, start.stderr
        mail = srv.mail()
        done = megafs_cli("signup", "--confirm", mail[-1]["link"], *common, env=env)
        assert done.returncode == 0, done.stderr
        up = megafs_cli("upload", "--account", email, *common, str(mine), env=env)
        assert up.returncode == 0, up.stderr
        proc = subprocess.run([thirdparty_python(), str(DRIVER), "--account", srv.url,
                               str(tmp_path / "tp"), email, str(theirs)],
                              capture_output=True, text=True, timeout=240, cwd=tmp_path,
                              env=dict(os.environ, DRIVER_PASSWORD=password))
        assert proc.returncode == 0, "driver failed:\n" + proc.stderr[-4000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["listed"] == ["from-megafs.bin"]
        assert Path(result["downloaded"]["from-megafs.bin"]).read_bytes() == mine.read_bytes()
        with MegaClient.open(api=srv.url, state_dir=str(tmp_path / "state"),
                             account=email.lower()) as client:
            assert client.session.user_handle == result["user"]
            nodes = {client_name(client, n): n for n in client.fetch().nodes if n["t"] == 0}
            assert sorted(nodes) == ["from-megafs.bin", "from-thirdparty.bin"]
            node = nodes["from-thirdparty.bin"]
            link = client.link_for(node, client.export([node["h"]])[0])
            client.download(link, str(tmp_path / "back.bin"))
        assert (tmp_path / "back.bin").read_bytes() == theirs.read_bytes()


def client_name(client, node) -> str:
    return crypto.decrypt_attr(crypto.b64decode(node["a"]), client.node_key(node))["n"]


def test_csid_vectors_with_async_mega_pys_own_login_code():
    """tests/unit/data/account-vectors.json, recomputed live by the library's login code."""
    script = (
        "import json,sys\n"
        "from mega.auth import _decrypt_credentials\n"
        "from mega.crypto import a32_to_bytes, str_to_a32\n"
        "d = json.load(open(sys.argv[1]))\n"
        "pk = str_to_a32(bytes.fromhex(d['password_key_hex']))\n"
        "out = {}\n"
        "for v in d['vectors']:\n"
        "    mk, sid = _decrypt_credentials(v['csid'], d['k'], d['privk'], pk)\n"
        "    out[v['id']] = [a32_to_bytes(mk).hex(), sid]\n"
        "print(json.dumps(out))\n")
    data = ROOT / "tests" / "unit" / "data" / "account-vectors.json"
    proc = subprocess.run([thirdparty_python(), "-c", script, str(data)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    vectors = json.loads(data.read_text())
    for v in vectors["vectors"]:
        mk, sid = got[v["id"]]
        assert mk == vectors["expected_master_key_hex"]
        if "async-mega-py 2.5.0" in v.get("agreed_by", []):
            assert sid == v["sid_b64"]
        else:
            assert sid == v["dissent"]["async-mega-py 2.5.0"] != v["sid_b64"]
