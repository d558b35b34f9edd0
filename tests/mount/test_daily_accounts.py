"""Issue 24, items 4 and 5: accounts side by side from one state dir, a logout of an account
that a mount uses is refused naming the mount, the not-logged-in hint carries --api and
--state-dir, and `--local` account commands start the bundled server when none runs."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from helpers.mount import force_unmount, is_mounted, megafs, wait_for

pytestmark = pytest.mark.fuse

PASSWORD = "correct horse battery"
ENV = {"MEGAFS_PASSWORD": PASSWORD}


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _signed_up(server, state: str, email: str) -> None:
    common = ["--api", server.url, "--state-dir", state]
    megafs("signup", email, "--name", "Test", *common, env=ENV)
    link = [m["link"] for m in server.mail() if m["to"] == email][-1]
    megafs("signup", "--confirm", link, *common, env=ENV)


@pytest.mark.slow
def test_accounts_side_by_side_and_logout_of_a_mounted_account(tmp_path, server):
    state = str(tmp_path / "state")
    common = ["--api", server.url, "--state-dir", state]
    ann, bob = ("%s.%d@example.com" % (n, time.time_ns()) for n in ("ann", "bob"))
    for email in (ann, bob):
        _signed_up(server, state, email)
    mnts = {who: tmp_path / who for who in ("ann", "bob", "anon")}
    try:
        for who, mnt in mnts.items():
            mnt.mkdir()
            account = {"ann": ["--account", ann], "bob": ["--account", bob]}.get(who, [])
            megafs("mount", str(mnt), *common, *account, env=ENV)
        for who, mnt in mnts.items():
            (mnt / (who + ".txt")).write_text("from " + who)
        for who, mnt in mnts.items():
            link = wait_for(lambda: (mnt / (who + ".txt.link")).read_text(), timeout=60,
                            what=who + "'s link")
            assert "/file/" in link, link
            assert sorted(os.listdir(mnt)) == [who + ".txt"]     # each its own account
        # the same account twice is still refused, naming the mount that has it
        again = tmp_path / "again"
        again.mkdir()
        _one_line(megafs("mount", str(again), *common, "--account", ann, check=False),
                  "already mounted at %s" % mnts["ann"])
        # logging out a mounted account is refused, naming the mount; its session stays
        _one_line(megafs("logout", ann, *common, check=False),
                  "%s is in use by the mount at %s" % (ann, mnts["ann"]),
                  "megafs umount %s" % mnts["ann"])
        assert (mnts["ann"] / "ann.txt").read_text() == "from ann"      # still mounted
        megafs("umount", str(mnts["ann"]), "--state-dir", state)
        res = megafs("logout", ann, *common)
        assert "logged out" in res.stderr
        # the hint to log in carries the --api and --state-dir that were given
        _one_line(megafs("mount", str(mnts["ann"]), *common, "--account", ann, check=False),
                  "run `megafs login %s --api %s --state-dir %s` first"
                  % (ann, server.url, state))
        assert is_mounted(mnts["bob"]) and is_mounted(mnts["anon"])
    finally:
        for mnt in mnts.values():
            force_unmount(mnt)


def test_local_account_commands_start_the_bundled_server(tmp_path):
    """`megafs logout/login --local` without a running `mount --local`: the state dir's server
    is started for the command (and stopped after it)."""
    state = str(tmp_path / "state")
    res = megafs("logout", "nobody@example.com", "--local", "--state-dir", state,
                 check=False, timeout=120)
    line = _one_line(res, "nobody@example.com is not logged in on http://127.0.0.1:")
    port = int(line.split("127.0.0.1:")[1].split("/")[0])
    assert open(os.path.join(state, "local-server.port")).read().strip() == str(port)
    with pytest.raises(OSError):          # stopped with the command
        import socket
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.slow
def test_a_taken_local_port_is_named_and_can_be_changed(tmp_path):
    """Issue 24, item 7: the port a state dir keeps for its bundled server, taken by another
    program, is one line naming it and the way out; --local-port moves the server."""
    import socket
    state = tmp_path / "state"
    state.mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    (state / "local-server.port").write_text(str(port))
    s = ["--state-dir", str(state)]
    try:
        _one_line(megafs("mount", str(mnt), "--local", *s, check=False),
                  "port %d of the local server" % port, "taken by another program",
                  "--local-port PORT")
        assert not is_mounted(mnt)
        bad = megafs("mount", str(mnt), "--local-port", "99999", "--local", *s, check=False)
        assert bad.returncode == 2 and "1-65535, not '99999'" in bad.stderr, bad.stderr
        _one_line(megafs("mount", str(mnt), "--local", "-o", "local_port=0", *s, check=False),
                  "bad value for mount option local_port", "1-65535")
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        new_port = free.getsockname()[1]
        free.close()
        megafs("mount", str(mnt), "--local", "--local-port", str(new_port), *s)
        try:
            (mnt / "a.txt").write_text("moved")
            link = (mnt / "a.txt.link").read_text()
            assert link.startswith("http://127.0.0.1:%d/" % new_port), link
        finally:
            megafs("umount", str(mnt), *s, check=False)
        assert (state / "local-server.port").read_text().strip() == str(new_port)
    finally:
        taken.close()
        force_unmount(mnt)
