"""The server's API lock (issue 19, item 3; megafs/server/apilock.py): a second overlapping
``/cs`` request of one session that is not only ``g`` gets a bare ``-3``; requests made only of
``g`` are never refused; ``api_lock`` off (``--no-api-lock``) refuses nothing.  Raw requests
from many threads at once (tests/helpers/rawapi.py, no lane), counted on both sides."""
from __future__ import annotations

import argparse
import threading

import pytest

from megafs.server.apilock import ApiLocks, is_locking
from megafs.server.cli import add_arguments, build_config
from helpers.rawapi import Api, encrypt_file, plaintext


@pytest.fixture(scope="module")
def acct(api):
    return api.new_account()


@pytest.fixture
def lock_on(module_server):
    module_server.options({"api_lock": True})
    yield module_server
    module_server.options({"api_lock": True})


def hammer(server, sid: str, batch: list, threads: int = 8, each: int = 15) -> list:
    """Send ``batch`` ``each`` times from each of ``threads`` threads (own connections) at
    once; every answer body."""
    answers: list = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def run():
        client = Api(server.url)
        try:
            start.wait()
            for _ in range(each):
                answer = client.batch(batch, sid=sid)
                with lock:
                    answers.append(answer)
        finally:
            client.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    return answers


def refused(server) -> int:
    return server.stats().get("api_lock_refused", 0)


def test_overlapping_locking_requests_get_a_bare_eagain(lock_on, acct):
    before = refused(lock_on)
    seen = 0
    for _ in range(10):                # overlap is a matter of timing: until it is seen
        answers = hammer(lock_on, acct.sid, [{"a": "uq"}, {"a": "ug"}])
        assert all(a == -3 or (isinstance(a, list) and len(a) == 2) for a in answers), answers
        seen += answers.count(-3)
        if seen:
            break
    assert seen > 0
    assert refused(lock_on) - before == seen       # each -3 counted once in the stats


def test_lockless_g_requests_are_never_refused(lock_on, api, acct):
    root = api.roots(acct)[2]
    node = api.put_file(acct, root, encrypt_file(plaintext(1000)), "g.bin")
    before = refused(lock_on)
    answers = hammer(lock_on, acct.sid, [{"a": "g", "g": 1, "n": node["h"]}])
    assert all(isinstance(a, list) and a[0].get("g") for a in answers), answers[:3]
    assert refused(lock_on) == before


def test_api_lock_off_refuses_nothing(lock_on, acct):
    lock_on.options({"api_lock": False})
    before = refused(lock_on)
    answers = hammer(lock_on, acct.sid, [{"a": "uq"}])
    assert -3 not in answers
    assert refused(lock_on) == before


def test_lock_is_per_session_and_only_for_locking_batches():
    locks = ApiLocks()
    assert locks.acquire("s1") and locks.acquire("s2")
    assert not locks.acquire("s1")
    locks.release("s1")
    assert locks.acquire("s1")
    assert not is_locking([{"a": "g", "n": "x"}, {"a": "g", "p": "y"}])
    for batch in ([{"a": "g"}, {"a": "uq"}], [{"a": "gd"}], [], "junk", [1]):
        assert is_locking(batch)


def test_cli_switch(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser, "serve")
    on = build_config(parser.parse_args(["--data", str(tmp_path)]))
    off = build_config(parser.parse_args(["--data", str(tmp_path), "--no-api-lock"]))
    assert on.policy.api_lock is True and off.policy.api_lock is False
