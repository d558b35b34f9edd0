"""Shared fixtures: a real ``megafs serve`` subprocess per test (or per module)."""
from __future__ import annotations

import pytest

from server_api import Api
from support import ServerProcess


@pytest.fixture
def server(tmp_path):
    """A fresh local MEGA server on 127.0.0.1 with its own data directory."""
    with ServerProcess(tmp_path / "server-data") as srv:
        yield srv


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """One local server shared by a module's tests (faults are cleared between uses)."""
    with ServerProcess(tmp_path_factory.mktemp("srv") / "server-data") as srv:
        yield srv


@pytest.fixture(scope="module")
def api(module_server):
    """A raw protocol client (tests/server_api.py) talking to the module's server."""
    client = Api(module_server.url)
    yield client
    client.close()
