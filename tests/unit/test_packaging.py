"""The wheel holds every module of the package (issue 19): a folder of ``megafs/`` without an
``__init__.py`` is left out by ``packages = find:`` and the installed megafs cannot import it
(``megafs.writeback`` was missing from every wheel before this test).  The real build and
install are checked by ``tests/mount/test_wheel_install.py``."""
from __future__ import annotations

import configparser
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent.parent


def _packaged() -> set[str]:
    """The packages setup.cfg's ``packages = find:`` with its ``include`` selects."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg.get("options", "packages").strip() == "find:"
    include = cfg.get("options.packages.find", "include").replace(",", " ").split()
    return set(find_packages(where=str(ROOT), include=include))


def _folders_with_code() -> set[str]:
    out = set()
    for path in (ROOT / "megafs").rglob("*.py"):
        if "__pycache__" not in path.parts:
            out.add(".".join(path.parent.relative_to(ROOT).parts))
    return out


def test_every_folder_with_modules_is_a_packaged_package():
    missing = sorted(_folders_with_code() - _packaged())
    assert not missing, "left out of the wheel (add an __init__.py): %s" % missing
    for name in _packaged():
        assert (ROOT / Path(*name.split(".")) / "__init__.py").is_file(), name


def test_the_top_level_is_the_fixed_one():
    """The repository's top level is fixed: setup.cfg, setup.py, megafs/, tests/, scripts/,
    README.md and .ci/ (design notes, examples and the man page live inside the package)."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    top = {path.split("/", 1)[0] for path in tracked}
    assert top <= {"setup.cfg", "setup.py", "megafs", "tests", "scripts", "README.md", ".ci",
                   ".gitignore"}, sorted(top)
