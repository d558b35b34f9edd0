"""Fixtures the client tests share: a module's server with its faults cleared around each test
(``srv``), one account per module (``account``: every new account costs proof-of-work solves
on a strict server) and a client of it that retries fast (``client``).  A module may define its
own fixture of the same name (``test_client_tls.py`` uses its own server)."""
from __future__ import annotations

import pytest

from helpers.client import fast_retry
from megafs.api.client import MegaClient


@pytest.fixture
def srv(module_server):
    module_server.clear_faults()
    yield module_server
    module_server.clear_faults()


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    """One account for the module's tests that need no fresh one."""
    return str(tmp_path_factory.mktemp("account"))


@pytest.fixture
def client(srv, account):
    with MegaClient.open(srv.url, state_dir=account, retry=fast_retry()) as c:
        yield c
