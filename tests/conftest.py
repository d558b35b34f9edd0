"""Shared fixtures for every test tier (unit/, client/, core/, mount/, server/, thirdparty/).

``server``: a fresh local MEGA server per test; ``module_server``: one per module.  Both run
the server's strict defaults with the API and transfers over TLS (``--tls-api``, a CA made by
the server), and the test process and every process it starts trust that CA through
``REQUESTS_CA_BUNDLE``.  ``api``: a raw protocol client for the module's server.  An autouse
fixture fails a test whose servers or mounts logged a WARNING, an ERROR or a traceback the test
did not declare with ``@pytest.mark.log_ok("substring", ...)``.
"""
from __future__ import annotations

import pytest

from helpers import logs
from helpers.rawapi import Api
from helpers.server import ServerProcess


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "log_ok(*substrings): log lines the test expects")


@pytest.fixture(autouse=True)
def check_logs(request):
    """Fail the test on unexpected WARNING/ERROR lines in the logs of what it started."""
    logs.STARTED.clear()
    yield
    allowed: list[str] = []
    for mark in request.node.iter_markers("log_ok"):
        allowed += list(mark.args)
    found = logs.problems(tuple(allowed))
    logs.STARTED.clear()
    if found:
        pytest.fail("unexpected log lines:\n" + "\n".join(found[:20]), pytrace=False)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A fresh local MEGA server on 127.0.0.1 (https) with its own data directory."""
    with ServerProcess(tmp_path / "server-data", tls="api") as srv:
        srv.trust_ca(monkeypatch)
        yield srv


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """One local server shared by a module's tests (faults are cleared between uses)."""
    with ServerProcess(tmp_path_factory.mktemp("srv") / "server-data", tls="api") as srv, \
            pytest.MonkeyPatch.context() as mp:
        srv.trust_ca(mp)
        yield srv


@pytest.fixture(scope="module")
def api(module_server):
    """A raw protocol client (tests/helpers/rawapi.py) talking to the module's server."""
    client = Api(module_server.url)
    yield client
    client.close()
