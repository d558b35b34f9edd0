"""Issue 24, item 9: megafs follows the ecosystem's conventions: a man page generated from the
parser (and kept up to date), bash/zsh completion generated from the parser by shtab, an
``install-helper`` that makes the ``mount.fuse.megafs`` link mount(8) looks for (tested in a
scratch folder, never /sbin), ``-d``/``-o debug`` as FUSE file systems take them, and a
``megafs --help`` that tells a person what megafs is."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megafs.cli import extras
from megafs.cli.main import COMMANDS, build_parser, main
from megafs.cli.mount import apply_options

ROOT = Path(__file__).resolve().parent.parent.parent


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "megafs", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=dict(os.environ, **(env or {})))


def test_the_man_page_is_generated_from_the_parser_and_installed():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "manpage.py"), "--check"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    page = (ROOT / "megafs" / "cli" / "megafs.1").read_text()
    assert page.startswith(".TH MEGAFS \"1\"")
    for name in COMMANDS:
        assert "megafs %s" % name.replace("-", "\\-") in page, name
    assert "\\-\\-staging\\-max" in page and "\\-\\-debug" in page
    assert "share/man/man1 = megafs/cli/megafs.1" in (ROOT / "setup.cfg").read_text()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_come_from_the_parser(shell, tmp_path):
    res = _run("completion", shell)
    assert res.returncode == 0, res.stderr
    for word in ("mount", "umount", "install-helper", "--staging-max", "--state-dir"):
        assert word in res.stdout, word
    if shell == "bash":
        script = tmp_path / "megafs.bash"
        script.write_text(res.stdout)
        # the script loads in bash and completes the subcommands after `megafs `
        out = subprocess.run(
            ["bash", "-c", "source %s; COMP_WORDS=(megafs um); COMP_CWORD=1; "
             "_shtab_megafs; printf '%%s\\n' \"${COMPREPLY[@]}\"" % script],
            capture_output=True, text=True, timeout=30)
        assert out.stdout.split() == ["umount"], (out.stdout, out.stderr)
    bad = _run("completion", "fish")
    assert bad.returncode == 2 and "invalid choice: 'fish'" in bad.stderr


def test_install_helper_links_mount_fuse_megafs(tmp_path, capsys):
    target = extras.helper_target()
    assert os.path.basename(target) == "mount.megafs" and os.access(target, os.X_OK)
    folder = tmp_path / "sbin"
    assert main(["install-helper", "--dir", str(folder)]) == 1
    assert "does not exist" in capsys.readouterr().err
    folder.mkdir()
    assert main(["install-helper", "--dir", str(folder)]) == 0
    link = folder / "mount.fuse.megafs"
    assert os.readlink(link) == target
    assert "linked %s -> %s" % (link, target) in capsys.readouterr().err
    assert main(["install-helper", "--dir", str(folder)]) == 0          # again: says so
    assert "already links" in capsys.readouterr().err
    link.unlink()
    link.write_text("someone else's helper")
    assert main(["install-helper", "--dir", str(folder)]) == 1
    assert "add --force" in capsys.readouterr().err
    assert link.read_text() == "someone else's helper"
    assert main(["install-helper", "--dir", str(folder), "--force"]) == 0
    assert os.readlink(link) == target


@pytest.mark.parametrize("argv", [["-d"], ["--debug"], ["-o", "debug"],
                                  ["-o", "uploads=2,debug"]])
def test_debug_means_foreground_debug_log_and_libfuse_trace(argv):
    args = build_parser().parse_args(["mount", "/mnt/x", *argv])
    args.log_level = getattr(args, "sub_log_level", None)
    args.log_file = None
    fuse = apply_options(args)
    assert args.foreground and args.log_level == "DEBUG" and fuse.get("debug") is True
    plain = build_parser().parse_args(["mount", "/mnt/x"])
    plain.log_level, plain.log_file = None, None
    assert "debug" not in apply_options(plain) and not plain.foreground


def test_top_level_help_describes_megafs():
    out = _run("--help").stdout
    first = out.split("\n\n")[1]
    assert first.startswith("megafs mounts your MEGA (mega.nz) Cloud Drive as a folder")
    assert "public link" in first and "code" not in first.lower()
    assert "getting started:" in out and "megafs mount ~/mega --local" in out
    assert isinstance(build_parser(), argparse.ArgumentParser)
