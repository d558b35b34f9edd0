"""``megafs get FOLDERLINK`` (issue 25, item 3) as a subprocess against the real local server
over HTTP, real crypto: the whole tree, one file or subfolder of it, resuming after an
interruption (complete files skipped, not fetched again), a revoked link, and hostile names from
a crafted listing that never leave ``-o DIR``."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.hostile import HostileApi
from helpers.server import ROOT
from megafs import crypto
from megafs.api.client import MegaClient, PutItem
from megafs.api.folderlink import export_folder, revoke_folder
from megafs.cli.getfolder import NAME_BYTES, TreeProgress, local_name

MIB = 1 << 20


def megafs(*args: str, cwd: Path | str = ROOT, timeout: float = 120
           ) -> subprocess.CompletedProcess:
    env = dict(os.environ, MEGAFS_RETRY_SECONDS="5")
    env.pop("MEGAFS_API", None)
    return subprocess.run([sys.executable, "-m", "megafs", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def put(client: MegaClient, parent: str, tmp_path: Path, name: str, data: bytes) -> str:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    node = client.put_files([PutItem(parent, client.upload(str(src)), {"n": name})])[0]
    assert isinstance(node, dict), node
    return node["h"]


def tree_of(folder: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for a folder) of everything below ``folder``."""
    out: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = None if path.is_dir() and not path.is_symlink() else path.read_bytes()
    return out


@pytest.fixture
def album(client, tmp_path):
    """An exported folder: nested folders, an empty folder, an empty file, a file of several
    MAC chunks.  (link, contents as ``tree_of`` gives them, handles by path)."""
    root = client.fetch().roots()[2]
    top = client.mkdir(root, "album-%s" % os.urandom(3).hex())["h"]
    handles = {"": top}
    for rel in ("sub", "sub/deeper", "empty-folder"):
        parent = handles[os.path.dirname(rel)]
        handles[rel] = client.mkdir(parent, os.path.basename(rel))["h"]
    files = {"a.txt": b"alpha\n", "empty.bin": b"", "big.bin": os.urandom(MIB + 4321),
             "sub/b.txt": os.urandom(70_000), "sub/deeper/c.txt": b"deep down\n",
             "sub/deeper/d.bin": os.urandom(3000)}
    for rel, data in files.items():
        handles[rel] = put(client, handles[os.path.dirname(rel)], tmp_path, os.path.basename(rel),
                           data)
    link = export_folder(client, top)
    contents: dict[str, bytes | None] = {"sub": None, "sub/deeper": None, "empty-folder": None}
    contents.update(files)
    return link, dict(sorted(contents.items())), handles


def test_get_writes_the_whole_tree_and_a_rerun_skips_it(srv, album, tmp_path):
    link, contents, _ = album
    out = tmp_path / "out"
    got = megafs("get", "--api", srv.url, link, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert got.stdout == "" and got.stderr == ""
    assert tree_of(out) == contents
    inodes = {p: (out / p).stat().st_ino for p, data in contents.items() if data is not None}
    again = megafs("get", "-v", "--api", srv.url, link, "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already complete, skipped") == len(inodes)
    assert {p: (out / p).stat().st_ino for p in inodes} == inodes      # not written again
    # without -o: a folder named after the link's folder, in the current directory
    here = tmp_path / "here"
    here.mkdir()
    assert megafs("get", "--api", srv.url, link, cwd=here).returncode == 0
    (made,) = here.iterdir()
    assert made.name.startswith("album-") and tree_of(made) == contents


def test_get_one_file_or_one_subfolder_of_the_link(srv, album, tmp_path):
    link, contents, handles = album
    one = megafs("get", "--api", srv.url, link + "/file/" + handles["sub/b.txt"],
                 "-o", str(tmp_path) + "/")
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "b.txt").read_bytes() == contents["sub/b.txt"]
    named = megafs("get", "--api", srv.url, link + "/file/" + handles["empty.bin"],
                   "-o", str(tmp_path / "named"))
    assert named.returncode == 0 and (tmp_path / "named").read_bytes() == b""
    sub = megafs("get", "--api", srv.url, link + "/folder/" + handles["sub"],
                 "-o", str(tmp_path / "sub"))
    assert sub.returncode == 0, sub.stderr
    assert tree_of(tmp_path / "sub") == {p[4:]: d for p, d in contents.items()
                                         if p.startswith("sub/")}
    # the legacy form with an item, and a local server's own link (no --api needed)
    handle, key = link.split("/folder/")[1].split("#")
    legacy = megafs("get", "--api", srv.url, "https://mega.nz/#F!%s!%s!%s"
                    % (handle, key, handles["a.txt"]), "-o", str(tmp_path / "legacy"))
    assert legacy.returncode == 0 and (tmp_path / "legacy").read_bytes() == b"alpha\n"
    local = megafs("get", srv.url + "folder/%s#%s" % (handle, key), "-o", str(tmp_path / "l"))
    assert local.returncode == 0, local.stderr
    assert tree_of(tmp_path / "l") == contents
    missing = megafs("get", "--api", srv.url, link + "/file/AAAAAAAA")
    assert missing.returncode == 1 and "not in the folder" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_interrupted_get_resumes_and_skips_complete_files(srv, album, tmp_path):
    link, contents, _ = album
    out = tmp_path / "out"
    srv.faults([{"where": "download", "delay": 1.0}])    # each transfer request waits 1 s
    proc = subprocess.Popen([sys.executable, "-m", "megafs", "get", "--api", srv.url, link,
                             "-o", str(out), "--connections", "1"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [p for p in out.rglob("*") if p.is_file()]:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    srv.clear_faults()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    done = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert 0 < len(done) < 6                   # some files complete, the rest not begun
    assert all(contents[p] == data for p, data in done.items())      # no partial file
    assert not [p for p in out.rglob("*") if "megafs-part" in p.name]
    inodes = {p: (out / p).stat().st_ino for p in done}
    again = megafs("get", "-v", "--api", srv.url, link, "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already complete, skipped") == len(done)
    assert {p: (out / p).stat().st_ino for p in done} == inodes
    assert tree_of(out) == contents
    # a local file changed since is not taken as complete, and is replaced only with --force
    (out / "sub" / "b.txt").write_bytes(b"x" * len(contents["sub/b.txt"]))
    refused = megafs("get", "--api", srv.url, link, "-o", str(out))
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 2 and "sub/b.txt: a different file is there" in lines[0], lines
    assert megafs("get", "--api", srv.url, link, "-o", str(out), "--force").returncode == 0
    assert tree_of(out) == contents


def test_dropped_and_truncated_transfers_are_retried(srv, album, tmp_path):
    link, contents, _ = album
    srv.faults([{"where": "download", "drop": True, "count": 2},
                {"where": "download", "truncate": True, "count": 1}])
    got = megafs("get", "--api", srv.url, link, "-o", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert tree_of(tmp_path / "out") == contents


def test_tampered_files_fail_one_line_each_and_leave_nothing(srv, album, tmp_path):
    link, contents, _ = album
    srv.faults([{"where": "download", "tamper": True}])
    got = megafs("get", "--api", srv.url, link, "-o", str(tmp_path / "out"))
    assert got.returncode == 1
    lines = got.stderr.strip().splitlines()
    nonempty = [p for p, data in contents.items() if data]
    assert sorted(line.split(": ")[1] for line in lines[:-1]) == sorted(nonempty)
    assert all("MAC mismatch" in line for line in lines[:-1]), lines
    assert "%d item(s) not downloaded" % len(nonempty) in lines[-1]
    assert [p for p, d in tree_of(tmp_path / "out").items() if d is not None] == ["empty.bin"]


def test_a_revoked_folder_link_is_one_line(srv, client, album, tmp_path):
    link, _, handles = album
    revoke_folder(client, handles[""])
    got = megafs("get", "--api", srv.url, link, "-o", str(tmp_path / "out"))
    assert got.returncode == 1
    assert got.stderr.strip().splitlines() == [got.stderr.strip()]
    assert "ENOENT" in got.stderr and "removed the link" in got.stderr
    assert not (tmp_path / "out").exists()
    assert link.split("#")[1] not in got.stderr


# --- hostile names ----------------------------------------------------------------------------
SHARE_KEY = bytes(range(16))


class HostileTree(HostileApi):
    """A fake API answering ``f`` with a crafted folder-link listing whose files all hold the
    ``HostileApi`` file (same key and bytes), and ``g`` for any of them."""

    def __init__(self) -> None:
        super().__init__(b"hostile content\n" * 10)
        self.nodes: list[dict] = []

    def add(self, handle: str, parent: str, ntype: int, name: str) -> None:
        key = self.key.pack() if ntype == 0 else os.urandom(16)
        node = {"h": handle, "p": parent, "t": ntype, "u": "UUUUUUUUUUU", "ts": 1,
                "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, key)),
                "k": "R0000000:" + crypto.b64encode(crypto.wrap_key(key, SHARE_KEY))}
        if ntype == 0:
            node["s"] = len(self.plaintext)
        self.nodes.append(node)

    def answer(self, command):
        if isinstance(command, dict) and command.get("a") == "f":
            return {"f": self.nodes, "ok": [], "s": [], "sn": "AAAAAAAAAAA"}
        return super().answer(command)


def test_hostile_names_never_leave_the_output_folder(tmp_path):
    work = tmp_path / "work"
    out = work / "out"
    (work / "outside").mkdir(parents=True)
    out.mkdir()
    (out / "planted").symlink_to(work / "outside")       # a symlink where a folder goes
    names = ["..", ".", "../escape", "a/b", "x\0y", "\x1b[31mred", "rtl\u202egnp.exe",
             "bad\ud800", "dup", "dup", "dup.txt", "dup.txt", "n" * 400 + ".txt", ".hidden",
             "~", "sub"]
    with HostileTree() as api:
        api.add("R0000000", "OWNERxxx", 1, "root")
        for i, name in enumerate(names):
            api.add("F%07d" % i, "R0000000", 0, name)
        api.add("D0000000", "R0000000", 1, "sub")             # a folder named like a file
        api.add("E0000000", "D0000000", 1, "..")              # a folder named ".." inside
        api.add("G0000000", "E0000000", 0, "../../../../up")
        api.add("P0000000", "R0000000", 1, "planted")
        api.add("Q0000000", "P0000000", 0, "through-the-link")
        link = "https://mega.nz/folder/AbCdEf01#" + crypto.b64encode(SHARE_KEY)
        got = megafs("get", "--api", api.url, link, "-o", str(out), cwd=work, timeout=60)
    assert "Traceback" not in got.stderr
    assert got.returncode == 1       # names with "/" or NUL cannot be read: left out, said so
    # ., .., ../escape, a/b, x\0y, and the folder ".." with its file
    assert "7 item(s) of the folder cannot be read" in got.stderr
    assert "planted: something other than a folder is there" in got.stderr
    assert "\x1b" not in got.stderr and "\u202e" not in got.stderr
    assert sorted(os.listdir(work)) == ["out", "outside"]
    assert os.listdir(work / "outside") == []
    made = sorted(os.listdir(out))
    assert "\\x1b[31mred" in made and "rtl\\u202egnp.exe" in made and "bad\\ud800" in made
    # equal names: the smallest handle keeps the name (the folder "sub" is D0000000)
    assert {"dup", "dup~F0000009", "dup.txt", "dup~F0000011.txt", ".hidden", "~", "sub",
            "sub~F0000015", "planted", "n" * NAME_BYTES} == set(made) - {
        "\\x1b[31mred", "rtl\\u202egnp.exe", "bad\\ud800"}
    assert (out / "sub").is_dir() and os.listdir(out / "sub") == []
    real_out = os.path.realpath(out)
    for path in out.rglob("*"):
        assert os.path.realpath(path).startswith(real_out + os.sep) or path.is_symlink()
        if path.is_file() and not path.is_symlink():
            assert path.read_bytes() == api.plaintext


def test_paths_too_deep_for_the_system_fail_in_one_line(tmp_path):
    with HostileTree() as api:
        api.add("R0000000", "OWNERxxx", 1, "root")
        parent = "R0000000"
        for i in range(30):                      # 30 x 201 bytes: beyond PATH_MAX (4096)
            api.add("D%07d" % i, parent, 1, "d" * 200)
            parent = "D%07d" % i
        api.add("F0000000", parent, 0, "bottom.txt")
        api.add("F0000001", "R0000000", 0, "top.txt")
        link = "https://mega.nz/folder/AbCdEf01#" + crypto.b64encode(SHARE_KEY)
        got = megafs("get", "--api", api.url, link, "-o", str(tmp_path / "out"), timeout=60)
    assert got.returncode == 1 and "Traceback" not in got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 2 and "File name too long" in lines[0], lines
    made = sum(1 for p in (tmp_path / "out").rglob("*") if p.is_dir())
    assert 10 < made < 30
    assert "%d item(s) not downloaded" % (30 - made + 1) in lines[1]    # folders and the file
    assert (tmp_path / "out" / "top.txt").read_bytes() == api.plaintext


def test_local_names():
    assert local_name("..") == "_.." and local_name(".") == "_." and local_name("") == "_"
    assert local_name("a/b\0c") == "a_b_c"
    assert local_name("\x1b[2J") == "\\x1b[2J"
    assert len(local_name("é" * 300).encode()) <= NAME_BYTES
    local_name("é" * 300).encode("utf-8")                  # cut at a character boundary


def test_one_progress_bar_counts_the_bytes_of_every_file():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = TreeProgress("album", 3000, screen)
    first, second = progress.file("AAAAAAAA"), progress.file("BBBBBBBB")
    first(500)
    second(1000)
    first(1000)                 # each file reports its own bytes so far
    assert progress.bar.bar.n == 2000
    second(2000)
    assert progress.bar.bar.n == 3000
    progress.bar.bar.refresh()                  # draw now (tqdm redraws every 0.1 s)
    progress.bar.finish()
    assert "album: 100%" in screen.getvalue() and "2.93k/2.93k" in screen.getvalue()
