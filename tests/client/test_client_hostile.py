"""A hostile or broken server against the client (issue 20, items 2-8).

A fake MEGA API on 127.0.0.1 (tests/helpers/hostile.py) answers ``megafs get`` with crafted
``g`` replies and transfer data; ``upload`` goes through the corrupting stand-in in front of the
real local server (tests/helpers/corrupt_proxy.py).  Every bad answer must end in one line on
stderr and exit 1 (never a traceback, a hang, memory growing with a claimed size, a file with
unverified bytes, an attacker's URL or raw control characters on the terminal).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from helpers.corrupt_proxy import CorruptProxy
from helpers.hostile import HostileApi
from helpers.mount import ROOT, megafs
from megafs import crypto
from megafs.api.client import MegaClient
from megafs.api.commands import DownloadInfo
from megafs.api.download import Downloader
from megafs.api.http import HttpPool
from megafs.errors import IntegrityError, ProtocolError
from megafs.retry import RetryPolicy


def get(api: HostileApi, cwd: Path, *extra: str, timeout: float = 60.0
        ) -> subprocess.CompletedProcess:
    """``megafs get LINK --api URL EXTRA`` run in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "megafs", "get", api.link, "--api", api.url,
                           *extra], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, MEGAFS_RETRY_SECONDS="2"))


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("megafs get: ") or lines[0].startswith("megafs upload: "), lines
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- item 2: claimed sizes ------------------------------------------------------------------
def test_get_refuses_a_size_beyond_what_mega_stores(tmp_path):
    with HostileApi() as api:
        api.g = {"s": 2 ** 62}
        started = time.monotonic()
        proc = get(api, tmp_path, "-o", str(tmp_path / "out"))
        assert time.monotonic() - started < 20
    assert proc.returncode == 1
    assert "size" in one_line(proc)
    assert leftovers(tmp_path) == []


def test_a_huge_claimed_size_grows_no_structure_in_get(tmp_path):
    """1 TiB (allowed) served short: the download fails, its memory does not follow the size
    (today's code listed every 8 MiB span before the first request)."""
    with HostileApi(os.urandom(1000)) as api:
        info = DownloadInfo(api.url + "dl/tok", 2 ** 40)
        down = Downloader(HttpPool(), retry=RetryPolicy(initial=0.01, cap=0.01,
                                                        give_up_after=1.0), connections=2)
        tracemalloc.start()
        try:
            with pytest.raises((IntegrityError, ProtocolError)):
                down.download_file(info, api.key, str(tmp_path / "big"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 4 * 2 ** 20, peak
    assert leftovers(tmp_path) == []


# --- item 4: reply sizes, deep JSON, lone surrogates -----------------------------------------
def test_a_huge_api_reply_is_refused_not_read_whole(tmp_path):
    with HostileApi() as api:
        api.padding = 80 * 2 ** 20       # valid JSON after 80 MiB of spaces
        proc = get(api, tmp_path, "-o", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    assert "larger than" in one_line(proc)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["batch", "attributes"])
def test_deeply_nested_json_is_a_protocol_error(tmp_path, where):
    with HostileApi() as api:
        if where == "batch":
            api.body = b"[" * 200000
        else:
            api.raw_attrs = b'{"n":' + b"[" * 200000
        proc = get(api, tmp_path, "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    one_line(proc)
    assert leftovers(tmp_path) == []


def test_deeply_nested_reply_to_upload_is_one_line(server, tmp_path):
    src = tmp_path / "f.txt"
    src.write_bytes(b"x")
    with CorruptProxy(server.url) as proxy:
        proxy.corrupt("cs", "p", body=b"[" * 200000)
        proc = megafs("upload", str(src), "--api", proxy.url, "--state-dir",
                      str(tmp_path / "state"), check=False)
    assert proc.returncode == 1
    one_line(proc)


def test_a_name_with_a_lone_surrogate_is_one_line(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    with HostileApi() as api:
        api.attrs = {"n": "bad\ud800name"}
        proc = get(api, work)
    assert proc.returncode == 1
    one_line(proc)
    assert leftovers(work) == []


# --- item 5: an empty file only with the MAC of no data --------------------------------------
def test_size_zero_needs_the_mac_of_no_data(tmp_path):
    with HostileApi(b"the real content") as api:
        api.g = {"s": 0}
        proc = get(api, tmp_path, "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "MAC" in one_line(proc)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("convention", ["zero", "one-empty-chunk"])
def test_empty_files_of_every_client_still_download(tmp_path, convention):
    with HostileApi(b"") as api:
        if convention == "one-empty-chunk":       # go-mega, megajs
            mac = crypto.meta_mac(crypto.condense_macs(api.key.aes_key,
                                                       [api.key.nonce + api.key.nonce]))
            api.key = api.key.with_mac(mac)
        else:                                     # MEGA's web client and SDK
            api.key = api.key.with_mac(bytes(8))
        proc = get(api, tmp_path, "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_bytes() == b""


# --- item 6: public handles ------------------------------------------------------------------
EVIL = "AAAAAAAA\nhttps://evil.example/file/AAAAAAAA"


def test_upload_never_prints_a_handle_that_is_not_one(server, tmp_path):
    src = tmp_path / "f.txt"
    src.write_bytes(b"secret")
    with CorruptProxy(server.url) as proxy:
        proxy.corrupt("cs", "l", rewrite=lambda reply: [EVIL])
        proc = megafs("upload", str(src), "--api", proxy.url, "--state-dir",
                      str(tmp_path / "state"), check=False)
    assert proc.returncode == 1
    assert "evil" not in proc.stdout and "evil" not in proc.stderr
    assert proc.stdout == ""
    one_line(proc)


def test_listing_and_packets_keep_only_real_public_handles():
    from megafs.api.commands import parse_export, parse_fetch
    from megafs.tree import packets
    from megafs.tree.tree import Tree
    listing = parse_fetch({"f": [], "sn": "x", "ph": [{"h": "AAAAAAAA", "ph": EVIL},
                                                      {"h": "BBBBBBBB", "ph": "Pu-_bl1c"}]})
    assert listing.public == {"BBBBBBBB": "Pu-_bl1c"}
    assert isinstance(parse_export(EVIL), ProtocolError)
    assert isinstance(parse_export("AAAA"), ProtocolError)
    assert parse_export("Pu-_bl1c") == "Pu-_bl1c"
    mk = crypto.random_key()
    tree = Tree(mk, "uuuuuuuuuuu")
    tree.load([{"h": "RRRRRRRR", "t": 2, "p": ""}])
    packets.apply(tree, {"a": "ph", "h": "RRRRRRRR", "ph": EVIL})
    assert tree.get("RRRRRRRR").public is None
    with pytest.raises(ProtocolError):
        from megafs.api.links import format_link
        format_link(EVIL, bytes(32))


# --- item 7: an interrupted get leaves no plaintext ------------------------------------------
def unnamed_files_work(folder: Path) -> bool:
    try:
        os.close(os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_an_interrupted_get_leaves_no_part_file(tmp_path, sig):
    """The part file is unnamed here (O_TMPFILE), so even SIGKILL leaves nothing; the named
    fallback is the next test."""
    if sig == signal.SIGKILL and not unnamed_files_work(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem: SIGKILL leaves a named part file")
    with HostileApi(os.urandom(3 * 2 ** 20)) as api:
        api.delay = 0.05          # ~1.3 MiB/s: the download takes seconds
        proc = subprocess.Popen([sys.executable, "-m", "megafs", "get", api.link, "--api",
                                 api.url, "-o", str(tmp_path / "out"), "--connections", "1"],
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        deadline = time.monotonic() + 30
        while api.transfers == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)           # bytes are being written
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert leftovers(tmp_path) == []
    if sig == signal.SIGKILL:
        return
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + sig)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_named_part_file_is_removed_at_once_by_the_signal(tmp_path, monkeypatch):
    """Where the filesystem has no unnamed files, the .megafs-part file goes as the signal
    arrives (a worker may still be blocked in a read)."""
    import threading
    from megafs.cli.transfer import _signals_stop
    from megafs.errors import Stopped
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    seen: list[str] = []

    def killer() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = [p for p in tmp_path.iterdir() if p.name.endswith(".megafs-part")]
            if parts and parts[0].stat().st_size > 0:
                seen.append(parts[0].name)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)
    with HostileApi(os.urandom(3 * 2 ** 20)) as api:
        api.delay = 0.05
        with MegaClient.public(api=api.url, connections=1) as client:
            threading.Thread(target=killer, daemon=True).start()
            with pytest.raises(Stopped):
                with _signals_stop():
                    client.download(api.link, str(tmp_path / "out"))
    assert seen and leftovers(tmp_path) == []


# --- item 8: remote names on a terminal --------------------------------------------------------
NASTY = ["\x1b]0;owned\x07title", "rtlo\u202egpj.exe", "new\nline", ".bashrc", ".."]


@pytest.mark.parametrize("name", NASTY)
def test_get_refuses_dot_and_control_names_without_force(tmp_path, name):
    work = tmp_path / "w"
    work.mkdir()
    with HostileApi() as api:
        api.attrs = {"n": name}
        proc = get(api, work, "-v")
    if name == "..":       # never a usable name: the link's handle is used instead
        assert proc.returncode == 0, proc.stderr
        assert leftovers(work) == [api.handle]
        return
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc)
    assert "--force" in line
    for bad in ("\x1b", "\x07", "\u202e"):
        assert bad not in proc.stderr
    assert leftovers(work) == []


def test_get_with_force_keeps_the_name_and_escapes_it_on_stderr(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    with HostileApi() as api:
        api.attrs = {"n": "a\x1b[2Jb\u202ec"}
        proc = get(api, work, "--force", "-v")
    assert proc.returncode == 0, proc.stderr
    assert leftovers(work) == ["a\x1b[2Jb\u202ec"]
    for bad in ("\x1b", "\u202e"):
        assert bad not in proc.stderr
    assert "\\x1b" in proc.stderr       # the log line names the file, escaped


def test_progress_labels_are_escaped():
    import io
    from megafs.cli.progress import Transfer

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    out = Tty()
    bar = Transfer("x\x1b[31m\u202eq\nr", 1000, stream=out)
    bar(500)
    bar.finish()
    text = out.getvalue()
    assert "\x1b[31m" not in text and "\u202e" not in text and "q\nr" not in text


def test_public_client_api_checks_attrs_json(tmp_path):
    """The library path of item 4: deep JSON in attributes is an IntegrityError (one line)."""
    with HostileApi() as api:
        api.raw_attrs = b'{"n":' + b"[" * 200000
        with MegaClient.public(api=api.url) as client:
            with pytest.raises((IntegrityError, ProtocolError)):
                client.download_info(api.link)


def test_status_escapes_paths_and_errors(monkeypatch, capsys, tmp_path):
    import argparse
    from megafs.cli import mount as cli_mount
    row = {"state": "failed", "path": "/a\x1b[2Jb", "size": 1, "progress": 0,
           "error": "bad\u202ename\nx"}
    monkeypatch.setattr(cli_mount, "_state_dir", lambda args: str(tmp_path))
    monkeypatch.setattr(cli_mount, "find_mount", lambda state, mnt: None)
    monkeypatch.setattr(cli_mount, "_files", lambda mnt, info: ([row], False))
    cli_mount.run_status(argparse.Namespace(mountpoint=str(tmp_path), watch=False, json=False))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and out.count("\n") == 2, out
    assert "\\x1b[2Jb" in out
