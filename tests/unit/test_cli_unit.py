"""The command line without mounts: parsing (-v anywhere, --version, help with examples), -o
options, progress lines, mount point checks, local links and sizes (issue 13)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from megafs import config
from megafs.api import links
from megafs.cli import main as cli_main
from megafs.cli.progress import QueueProgress, Transfer
from megafs.errors import FsError, LinkError, MegafsError
from megafs.mount.options import OptionError, describe_options, split_options
from megafs.mount import preflight
from megafs.vfs.links import LINK_SIZE, link_size

KEY = "B" * 42 + "A"


def test_verbose_and_log_options_anywhere():
    args = cli_main.parse(["-v", "status", "/x", "-v", "--log-level", "debug"])
    assert args.verbose == 2 and args.log_level == "DEBUG" and args.command == "status"
    args = cli_main.parse(["--log-file", "/tmp/a", "status", "/x"])
    assert args.log_file == "/tmp/a" and args.verbose == 0
    args = cli_main.parse(["status", "/x", "--log-file", "/tmp/b"])
    assert args.log_file == "/tmp/b"


def test_version_and_help_with_examples():
    run = [sys.executable, "-m", "megafs"]
    out = subprocess.run(run + ["--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("megafs ")
    for command in cli_main.COMMANDS:
        res = subprocess.run(run + [command, "--help"], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, command
        assert "examples:" in res.stdout and "megafs %s" % command in res.stdout, command
    res = subprocess.run(run + ["mount", "--help"], capture_output=True, text=True, timeout=60)
    for name in ("state_dir=DIR", "staging_max=SIZE", "allow_other", "_netdev", "local"):
        assert name in res.stdout


def test_mount_options_are_checked_and_converted():
    own, fuse = split_options("local,uploads=8,staging-max=1G,allow_other,_netdev,"
                              "x-systemd.automount,ro,noauto")
    assert own == {"local": True, "uploads": 8, "staging_max": 1 << 30, "allow_other": True}
    assert fuse == {"ro": True}     # allow_other reaches libfuse through apply_options
    with pytest.raises(OptionError, match="unknown mount option 'bogus'"):
        split_options("bogus")
    with pytest.raises(OptionError, match="uploads"):
        split_options("uploads=100")
    with pytest.raises(OptionError, match="staging_max"):
        split_options("staging_max=lots")
    assert "state_dir" in describe_options()
    # values are checked with a sentence, never Python's own words (issue 24)
    for bad, words in (("uploads=abc", "'abc' is not a whole number (give one between 1 and "
                        "64)"), ("log_level=LOUD", "'LOUD' is not a log level"),
                       ("link_timeout=-5", "must be more than 0 seconds"),
                       ("link_timeout=nan", "must be more than 0 seconds"),
                       ("link_timeout=abc", "'abc' is not a number of seconds")):
        with pytest.raises(OptionError) as caught:
            split_options(bad)
        assert words in str(caught.value) and "int()" not in str(caught.value), bad
    run = [sys.executable, "-m", "megafs"]
    for args, words in ((["mount", "m", "--link-timeout", "-5"], "--link-timeout: must be"),
                        (["serve", "--port", "99999"], "a port is a whole number 0-65535")):
        res = subprocess.run(run + args, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and words in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_ctrl_c_while_the_command_is_still_importing_is_one_line(tmp_path):
    """Ctrl-C while megafs imports its modules (the first ~0.2 s) gave a KeyboardInterrupt
    traceback (issue 24).  ``-X importtime`` tells when ``megafs.cli.entry`` is loaded; the
    signal sent then lands while the command's own modules are still being imported."""
    import signal

    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "megafs", "serve",
                             "--data", str(tmp_path / "data"), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if line.rstrip().endswith("megafs.cli.entry"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(60) == 130, rest[-2000:]
    said = [ln for ln in rest.splitlines() if not ln.startswith("import time:")]
    assert said == ["", "megafs: interrupted"] or said[-1].endswith(": interrupted"), said
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest


def test_sizes():
    assert config.parse_size("512K") == 512 << 10
    assert config.parse_size("20G") == 20 << 30
    assert config.parse_size("1.5M") == 3 << 19
    assert config.parse_size("100") == 100
    with pytest.raises(ValueError):
        config.parse_size("ten")


def test_transfer_bar_draws_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    stream = Tty()
    bar = Transfer("photo.png", 4 << 20, stream=stream)
    bar(2 << 20)
    bar(4 << 20)
    bar.finish()
    text = stream.getvalue()
    assert "photo.png" in text and "4.00M" in text


def test_queue_progress_lines_have_bytes_rate_and_eta():
    out = io.StringIO()
    bar = QueueProgress(out, tty=False)
    bar.update([{"path": "/a", "state": "uploading", "size": 10 << 20, "progress": 0},
                {"path": "/b", "state": "pending", "size": 1000, "progress": 0}])
    bar.start -= 2
    for f in bar.files.values():
        f["since"] -= 2
    bar.update([{"path": "/a", "state": "uploading", "size": 10 << 20, "progress": 5 << 20},
                {"path": "/b", "state": "pending", "size": 1000, "progress": 0}])
    lines = bar.lines(0)
    assert "/a" in lines[0] and "5.00M/10.0M" in lines[0] and "B/s" in lines[0]
    assert "<00:0" in lines[0]                        # an ETA of a few seconds
    assert "/b: pending" in lines[1]
    assert lines[-1].startswith("total: 2 file(s) left") and "B/s" in lines[-1]
    bar.update([])
    assert bar.finished_files == 2 and bar.finished == (10 << 20) + 1000
    bar.draw(force=True)
    assert "total: 0 file(s) left, 2 uploaded" in out.getvalue()
    # a watch started when 9 of 10 MiB were already sent: 0.5 MiB in 2 s while watched is
    # 262 kB/s and 0.5 MiB left is 2 s more, not the 9 MiB "sent" in no time (issue 24)
    late = QueueProgress(io.StringIO(), tty=False)
    late.update([{"path": "/c", "state": "uploading", "size": 10 << 20, "progress": 9 << 20}])
    late.start -= 2
    for f in late.files.values():
        f["since"] -= 2
    lines = late.lines(0)
    assert "?B/s" in lines[-1] and "?B/s" in lines[0]       # nothing sent while watched yet
    late.update([{"path": "/c", "state": "uploading", "size": 10 << 20,
                  "progress": (9 << 20) + (1 << 20) // 2}])
    line = late.lines(0)[-1]
    assert "262kB/s" in line, line
    assert "<00:02" in line, line


def test_mountpoint_checks(tmp_path):
    with pytest.raises(FsError, match="does not exist; create it"):
        preflight.check_mountpoint(str(tmp_path / "none"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FsError, match="not a folder"):
        preflight.check_mountpoint(str(tmp_path / "file"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "a").write_text("x")
    with pytest.raises(FsError, match="not empty.*-o nonempty"):
        preflight.check_mountpoint(str(full))
    preflight.check_mountpoint(str(full), nonempty=True)
    (tmp_path / "empty").mkdir()
    preflight.check_mountpoint(str(tmp_path / "empty"))


def test_fuse_device_checks(tmp_path):
    with pytest.raises(FsError, match="missing: load the FUSE module"):
        preflight.check_fuse_device(device=str(tmp_path / "nofuse"))


def test_api_check_is_fast_and_says_what_to_do():
    with pytest.raises(MegafsError, match="cannot reach the MEGA API.*--local"):
        preflight.check_api("http://127.0.0.1:1/")
    with pytest.raises(MegafsError, match="unknown host"):
        preflight.check_api("https://no-such-host.invalid/")


def test_state_dir_that_cannot_be_used(tmp_path):
    with pytest.raises(MegafsError, match="cannot use the state directory /proc/x.*--state-dir"):
        config.state_dir_ready("/proc/x")
    assert config.state_dir_ready(str(tmp_path / "s")) == str(tmp_path / "s")
    assert os.listdir(tmp_path / "s") == []


def test_local_links_format_and_parse():
    site = "http://127.0.0.1:8733/"
    link = links.format_link("AbCdEfGh", links.parse_link(
        "https://mega.nz/file/AbCdEfGh#" + KEY).key, site=site)
    assert link == "http://127.0.0.1:8733/file/AbCdEfGh#" + KEY
    parsed = links.parse_link(link)
    assert parsed.api == site and parsed.handle == "AbCdEfGh" and parsed.url() == link
    assert links.parse_link("<http://localhost:9/file/AbCdEfGh#%s>." % KEY).api == \
        "http://localhost:9/"
    assert links.parse_link("https://mega.nz/file/AbCdEfGh#" + KEY).api is None
    for bad in ("http://10.1.2.3:8733/file/AbCdEfGh#" + KEY,
                "http://127.0.0.1:8733/folder/AbCdEfGh#" + KEY,
                "http://127.0.0.1:8733/file/AbCdEfGh#short"):
        with pytest.raises(LinkError):
            links.parse_link(bad)
    # every .link of a mount has the same, exact size
    assert link_size() == LINK_SIZE == len("https://mega.nz/file/AbCdEfGh#" + KEY) + 1
    assert link_size(site) == len(link) + 1


def test_same_content_by_mac_without_download(tmp_path):
    from megafs import crypto
    from megafs.api.identical import same_content
    for size in (0, 1, 131072, 131073, 5 << 20):
        data = os.urandom(size)
        key = crypto.new_file_key()
        key = key.with_mac(crypto.file_meta_mac(key.aes_key, key.nonce, data))
        path = tmp_path / ("f%d" % size)
        path.write_bytes(data)
        assert same_content(str(path), key, size)
        if size:
            changed = bytearray(data)
            changed[size // 2] ^= 1
            path.write_bytes(bytes(changed))
            assert not same_content(str(path), key, size)
            path.write_bytes(data + b"x")
            assert not same_content(str(path), key, size)
            other = crypto.new_file_key()
            path.write_bytes(data)
            assert not same_content(str(path), other.with_mac(key.mac), size)
