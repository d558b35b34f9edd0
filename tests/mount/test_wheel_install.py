"""megafs installed as users install it (issue 19): the sdist and the wheel are built the way
``pip install .`` and ``python -m build`` build them (an isolated build environment), the wheel
goes into a fresh virtualenv, and from there, outside the source tree, ``megafs mount --local``
mounts, a copied file gets a link and ``megafs get`` gives its bytes back.  An editable install
(what the rest of the suite uses) hides a package left out of the wheel; this does not."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers.mount import ROOT, force_unmount

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (
        " ".join(cmd), proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def _modules_in_tree() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "megafs").rglob("*.py")
            if "__pycache__" not in p.parts}


def test_wheel_and_sdist_install_and_mount(tmp_path):
    dist = tmp_path / "dist"
    # a copy of the tracked files only: no .venv, no build/ or egg-info left by an editable
    # install, exactly what a clean clone holds
    src = tmp_path / "src"
    src.mkdir()
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], ROOT).split()
    archive = subprocess.run(["tar", "-C", str(ROOT), "-cf", "-", *files],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-C", str(src), "-xf", "-"], input=archive, check=True)
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(src)],
         tmp_path, timeout=600)
    wheels = list(dist.glob("megafs-*.whl"))
    sdists = list(dist.glob("megafs-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    want = _modules_in_tree()
    with zipfile.ZipFile(wheels[0]) as whl:
        in_wheel = {n for n in whl.namelist() if n.endswith(".py")}
    assert want - in_wheel == set(), "missing from the wheel: %s" % sorted(want - in_wheel)
    with tarfile.open(sdists[0]) as sdist:
        in_sdist = {n.split("/", 1)[1] for n in sdist.getnames() if n.endswith(".py")}
    assert want - in_sdist == set(), "missing from the sdist: %s" % sorted(want - in_sdist)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0])],
         tmp_path, timeout=600)
    where = _run([str(venv / "bin" / "python"), "-c", "import megafs; print(megafs.__file__)"],
                 tmp_path).strip()
    assert where.startswith(str(venv)), where        # the installed copy, not the source tree
    # the man page and completion come with the install (issue 24)
    page = venv / "share" / "man" / "man1" / "megafs.1"
    assert page.read_text() == (ROOT / "megafs" / "cli" / "megafs.1").read_text()
    assert "umount" in _run([str(venv / "bin" / "megafs"), "completion", "bash"], tmp_path)

    megafs = str(venv / "bin" / "megafs")
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    mnt.mkdir()
    data = os.urandom(300000)
    (tmp_path / "photo.png").write_bytes(data)
    try:
        _run([megafs, "mount", str(mnt), "--local", "--state-dir", str(state)], tmp_path,
             timeout=180)
        _run(["cp", "photo.png", str(mnt)], tmp_path)
        link = (mnt / "photo.png.link").read_text().strip()
        assert link.startswith("http://127.0.0.1:") and "/file/" in link, link
        _run([megafs, "get", link, "-o", "copy.png"], tmp_path, timeout=120)
        assert (tmp_path / "copy.png").read_bytes() == data
        _run([megafs, "umount", str(mnt), "--state-dir", str(state)], tmp_path, timeout=180)
        assert not os.path.ismount(mnt)
    finally:
        force_unmount(mnt)
