"""``megafs upload`` / ``megafs get`` / ``megafs session`` as subprocesses against
``megafs serve``: round trips of awkward sizes, faults, and the one-line errors."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest

from megafs.api import fingerprint
from megafs.api.client import MegaClient
from helpers.server import ROOT

MIB = 1 << 20
SIZES = [0, 1, 15, 16, 17, 131071, 131072, 131073, MIB + 1, 3 * MIB + 333]


def megafs(*args: str, env: dict | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, MEGAFS_RETRY_SECONDS="30")
    full_env.pop("MEGAFS_API", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "megafs", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def common(srv, account):
    return ["--api", srv.url, "--state-dir", account]


@pytest.fixture
def fresh(srv, tmp_path):
    return ["--api", srv.url, "--state-dir", str(tmp_path / "state")]


def digest(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_upload_and_get_sizes(common, tmp_path):
    files = []
    for size in SIZES:
        path = tmp_path / ("in-%d.bin" % size)
        path.write_bytes(os.urandom(size))
        files.append(path)
    up = megafs("upload", *common, *map(str, files))
    assert up.returncode == 0, up.stderr
    found = up.stdout.split()
    assert len(found) == len(files)
    assert all(line.startswith("https://mega.nz/file/") for line in found)
    outdir = tmp_path / "out"
    outdir.mkdir()
    for path, link in zip(files, found):
        got = megafs("get", "--api", common[1], link, "-o", str(outdir))
        assert got.returncode == 0, got.stderr
        assert digest(outdir / path.name) == digest(path)   # named from the node attributes
    with MegaClient.public(common[1]) as anon:               # MEGA's fingerprint is there too
        for path, link in zip(files[:4] + files[-1:], found[:4] + found[-1:]):
            attrs = anon.download_info(link).attrs
            assert attrs["c"] == fingerprint.fingerprint(str(path))
            assert fingerprint.parse(attrs["c"])[1] == attrs["t"] == int(path.stat().st_mtime)


def test_upload_and_get_under_faults(srv, common, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(2 * MIB + 5))
    srv.faults([{"where": "cs", "error": -3, "count": 2},
                {"where": "upload", "http": 503, "count": 2},
                {"where": "upload", "error": -4, "count": 1}])
    up = megafs("upload", *common, str(path))
    assert up.returncode == 0, up.stderr
    link = up.stdout.strip()
    srv.faults([{"where": "download", "drop": True, "count": 1},
                {"where": "download", "truncate": True, "count": 1}])
    out = tmp_path / "g"
    got = megafs("get", "--api", srv.url, link, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert digest(out) == digest(path)


def test_upload_reports_each_failed_file(common, tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"hello")
    up = megafs("upload", *common, str(tmp_path / "missing"), str(good), str(tmp_path))
    assert up.returncode == 1
    assert len(up.stdout.split()) == 1
    errors = up.stderr.strip().splitlines()
    assert len(errors) == 2 and "missing" in errors[0] and "regular file" in errors[1]
    assert "Traceback" not in up.stderr


def test_get_errors_are_one_line(srv, common, tmp_path):
    bad = megafs("get", "--api", srv.url, "https://mega.nz/folder/AAAAAAAA#BBBB")
    # a folder link is taken (tests/client/test_client_get_folder.py); this one is cut off
    assert bad.returncode == 1 and "folder link has no key or a damaged one" in bad.stderr
    bad = megafs("get", "--api", srv.url, "not a link")
    assert bad.returncode == 1 and "not a MEGA file link" in bad.stderr
    missing = megafs("get", "--api", srv.url, "https://mega.nz/file/AAAAAAAA#" + "A" * 43)
    assert missing.returncode == 1 and "-9" in missing.stderr and "ENOENT" in missing.stderr
    path = tmp_path / "t.bin"
    path.write_bytes(os.urandom(50000))
    link = megafs("upload", *common, str(path)).stdout.strip()
    srv.faults([{"where": "download", "tamper": True}])
    out = tmp_path / "tampered"
    got = megafs("get", "--api", srv.url, link, "-o", str(out))
    assert got.returncode == 1 and "MAC mismatch" in got.stderr
    assert not out.exists()
    for result in (bad, missing, got):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_upload_over_quota(srv, common, tmp_path):
    path = tmp_path / "big"
    path.write_bytes(os.urandom(4000))
    srv.control("quota", {"bytes": 100})
    try:
        up = megafs("upload", *common, str(path))
    finally:
        srv.control("quota", {"bytes": 1 << 40})
    assert up.returncode == 1 and "-17" in up.stderr and "EOVERQUOTA" in up.stderr


def test_session_command(fresh, tmp_path):
    common = fresh
    assert megafs("session", "--state-dir", common[-1]).stdout == ""    # lists, creates none
    first = megafs("session", "--show", *common)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert {"api", "user_handle", "sid", "master_key", "password_key"} <= set(data)
    assert "secret" in first.stderr
    again = json.loads(megafs("session", "--show", *common).stdout)
    listed = megafs("session", "--state-dir", common[-1]).stdout
    assert "anonymous" in listed and data["user_handle"] in listed and data["sid"] not in listed
    assert again["user_handle"] == data["user_handle"]
    sessions = tmp_path / "state" / "sessions"
    assert stat.S_IMODE(os.stat(sessions).st_mode) == 0o700
    new = megafs("session", *common, "--new")
    assert new.returncode == 0, new.stderr
    fresh = json.loads(new.stdout)
    assert fresh["user_handle"] != data["user_handle"]
    kept = [name for name in os.listdir(sessions) if name.endswith(".json")]
    assert len(kept) == 2
    old = [name for name in kept if json.loads((sessions / name).read_text())["user_handle"]
           == data["user_handle"]]
    assert len(old) == 1
    for name in kept:
        assert stat.S_IMODE(os.stat(sessions / name).st_mode) == 0o600


def test_session_file_errors_from_the_cli(srv, fresh, tmp_path):
    common = fresh
    assert megafs("session", "--show", *common).returncode == 0
    sessions = tmp_path / "state" / "sessions"
    (name,) = [n for n in os.listdir(sessions) if n.endswith(".json")]
    path = sessions / name
    wrong = megafs("upload", "--api", "http://127.0.0.1:9/", "--session", str(path),
                   str(path))
    assert wrong.returncode == 1 and "was made for API" in wrong.stderr
    path.write_text("{corrupt")
    corrupt = megafs("upload", *common, str(path))
    assert corrupt.returncode == 1 and "corrupt" in corrupt.stderr
    assert path.read_text() == "{corrupt"   # never replaced silently


def test_api_from_environment(srv, tmp_path):
    result = megafs("session", "--show", "--state-dir", str(tmp_path / "st"),
                    env={"MEGAFS_API": srv.url})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["api"] == srv.url


def test_get_into_missing_directory_is_one_line(srv, common, tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"x")
    link = megafs("upload", *common, str(path)).stdout.strip()
    got = megafs("get", "--api", srv.url, link, "-o", str(tmp_path / "no" / "such" / "file"))
    assert got.returncode == 1 and "folder %s does not exist" % (tmp_path / "no" / "such") \
        in got.stderr and "mkdir -p" in got.stderr
    assert "Traceback" not in got.stderr and len(got.stderr.strip().splitlines()) == 1
