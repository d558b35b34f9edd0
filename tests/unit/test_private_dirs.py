"""Folders megafs did not create keep their mode (issue 20 item 1): ``--log-file DIR/x.log``,
``--state-dir DIR`` and the server's ``--data DIR`` once chmodded an existing DIR to 0700 (a
``/tmp`` lost its sticky bit).  Folders megafs creates are 0700.  Scratch folders only."""
from __future__ import annotations

import os
import stat
import pytest

from megafs import config


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mode", [0o1777, 0o755])
def test_existing_folder_keeps_its_mode(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    config.private_dir(str(shared))
    config.state_dir_ready(str(shared))
    assert _mode(shared) == mode


def test_created_folders_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        made = tmp_path / "a" / "b" / "c"
        config.private_dir(str(made))
    finally:
        os.umask(old)
    assert _mode(made) == 0o700
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700


class _Daemonized(Exception):
    pass


@pytest.mark.parametrize("how", ["--log-file", "-o"])
def test_log_file_folder_is_not_chmodded(tmp_path, monkeypatch, how):
    """A background ``megafs mount --log-file SHARED/megafs.log`` (or ``-o log_file=``, as in
    fstab) runs up to starting the daemon; SHARED keeps 1777.  The FUSE device check and the
    daemon itself are replaced (no device is touched, nothing is mounted)."""
    from megafs.cli import main as cli_main
    from megafs.cli import mount as cli_mount
    from megafs.mount import daemon, preflight

    def refuse(*args, **kwargs):
        raise _Daemonized()

    monkeypatch.setattr(preflight, "check_fuse_device", lambda **kw: None)
    monkeypatch.setattr(daemon, "daemonize", refuse)
    shared, mnt = tmp_path / "shared", tmp_path / "mnt"
    shared.mkdir()
    mnt.mkdir()
    os.chmod(shared, 0o1777)
    log = str(shared / "megafs.log")
    opts = ["--log-file", log] if how == "--log-file" else ["-o", "log_file=" + log]
    args = cli_main.parse(["mount", "--local", "--state-dir", str(tmp_path / "state"), *opts,
                           str(mnt)])
    with pytest.raises(_Daemonized):
        cli_mount.run_mount(args)
    assert _mode(shared) == 0o1777


def test_server_data_dir_and_tls_dir_keep_their_mode(tmp_path):
    from megafs.server import tls
    data = tmp_path / "data"
    (data / "tls").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "tls", 0o755)
    tls.ensure_certificates(data, "127.0.0.1")
    assert _mode(data / "tls") == 0o755
    assert _mode(data / "tls" / "server.key") == 0o600
