"""Interoperability: an independent MEGA client from PyPI (async-mega-py 2.5.0, not written here)
against ``megafs serve``.

``tests/thirdparty/driver.py`` runs in its own virtualenv (``$MEGAFS_THIRDPARTY_PYTHON``, made by
scripts/test) and uses only that library's public API: anonymous login, upload, link export,
and download of the link with the library's own meta-MAC check.  This test then checks the
bytes round-tripped, and that our own crypto decrypts and verifies what the library uploaded,
fetched from our server as ciphertext: the server holds ciphertext only, and our crypto and
an independent implementation agree on the format.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from megafs import crypto
from megafs.api import links
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
