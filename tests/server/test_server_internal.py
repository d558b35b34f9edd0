"""What the server does when its own code fails: the only tests that run it in-process, so
that a bug can be planted in one handler.  A bug must answer ``-1`` (cs) or HTTP 500, log at
ERROR with the traceback in the log, never send a traceback over HTTP, and leave the other
commands of the batch and later requests working."""
from __future__ import annotations

import json
import logging
import threading

import pytest
import requests

from megafs.server.app import App
from megafs.server.commands import batch
from megafs.server.config import Config, Policy
from megafs.server.web import ep_api
from megafs.server.web.listeners import Listener
from helpers.rawapi import Api


@pytest.fixture
def inproc(tmp_path):
    app = App(Config(data_dir=tmp_path / "data", policy=Policy(hashcash_easiness=0)))
    listeners = [Listener("127.0.0.1", 0, app, role) for role in ("api", "wait")]
    app.urls.api, app.urls.wait = ("http://127.0.0.1:%d/" % lsn.server_address[1]
                                   for lsn in listeners)
    threads = [threading.Thread(target=lsn.serve_forever, kwargs={"poll_interval": 0.1},
                                daemon=True) for lsn in listeners]
    for thread in threads:
        thread.start()
    yield app
    app.stop()
    for lsn in listeners:
        lsn.shutdown()
        lsn.server_close()
    app.close()


def test_a_bug_in_one_command_answers_minus_1_and_logs_an_error(inproc, monkeypatch, caplog):
    api = Api(inproc.base_url)
    acct = api.new_account()

    def broken(ctx, cmd):
        raise RuntimeError("planted bug")

    monkeypatch.setitem(batch.COMMANDS, "uq", broken)
    with caplog.at_level(logging.INFO, logger="megafs.server"):
        resp = api.post_cs(json.dumps([{"a": "ug"}, {"a": "uq"}, {"a": "f"}]), sid=acct.sid)
    answer = resp.json()
    assert answer[0]["u"] == acct.uh and answer[1] == -1 and "f" in answer[2]
    assert b"Traceback" not in resp.content and b"planted" not in resp.content
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info and "uq" in errors[0].getMessage()
    assert api.call({"a": "ug"}, sid=acct.sid)["u"] == acct.uh


def test_a_bug_outside_the_commands_is_http_500_or_minus_1(inproc, monkeypatch, caplog):
    api = Api(inproc.base_url)
    acct = api.new_account()
    url = api.upload_url(acct, 100)

    def broken(*args, **kwargs):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(inproc.uploads, "post", broken)
    monkeypatch.setattr(ep_api, "run_cs", broken)
    with caplog.at_level(logging.ERROR, logger="megafs.server"):
        up = requests.post(url + "/0", data=bytes(100), timeout=10)
        cs = api.post_cs(json.dumps([{"a": "ug"}]), sid=acct.sid)
    assert up.status_code == 500 and up.content == b""
    assert cs.status_code == 200 and cs.json() == -1
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    assert inproc.stats_snapshot()["internal_errors"] == 2
