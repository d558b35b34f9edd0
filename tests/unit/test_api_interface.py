"""``api.interface.MegaApi`` describes what the mount uses from the client: ``MegaClient``
provides every member with the same parameters, and the protocol names exactly the methods
the rest of megafs calls (so the description cannot drift from the code)."""
from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

from megafs import crypto
from megafs.api.client import MegaClient
from megafs.api.interface import MegaApi, MegaClientFactory
from megafs.api.session import Session
from megafs.api.transport import Transport

ROOT = Path(__file__).resolve().parent.parent.parent

PROTOCOL_METHODS = {name for name, value in vars(MegaApi).items()
                    if callable(value) and not name.startswith("_")}


def offline_client() -> MegaClient:
    transport = Transport("http://127.0.0.1:9/")
    session = Session("http://127.0.0.1:9/", "U" * 11, crypto.b64encode(os.urandom(43)),
                      os.urandom(16), os.urandom(16), "now")
    return MegaClient(transport, session)


def test_megaclient_is_a_megaapi():
    client = offline_client()
    try:
        assert isinstance(client, MegaApi)
        for name in PROTOCOL_METHODS:
            want = inspect.signature(getattr(MegaApi, name))
            got = inspect.signature(getattr(MegaClient, name))
            assert list(got.parameters) == list(want.parameters), name
            for param in want.parameters.values():
                assert got.parameters[param.name].kind == param.kind, (name, param.name)
                assert got.parameters[param.name].default == param.default, (name, param.name)
    finally:
        client.close()


def test_factory_matches_the_constructors():
    for name in ("open", "public"):
        want = list(inspect.signature(getattr(MegaClientFactory, name)).parameters)[1:]
        got = list(inspect.signature(getattr(MegaClient, name)).parameters)
        assert got == want, name


def test_protocol_names_what_the_mount_calls():
    """Every ``client.X(`` call outside the client library is in the protocol, and the
    protocol has nothing the mount does not use besides ``unexport`` (asked for by issue 11)
    and the two download helpers of ``megafs get``."""
    called = set()
    for path in (ROOT / "megafs").rglob("*.py"):
        if path.relative_to(ROOT / "megafs").parts[0] in ("api", "server"):
            continue        # the client library itself, and the server (its own "client"s)
        text = path.read_text()
        called |= set(re.findall(r"\bclient\.([a-z_]+)\(", text))
    assert called <= PROTOCOL_METHODS | {"link_for"}, called - PROTOCOL_METHODS
    assert {"fetch", "poll", "upload", "put_files", "export", "open_download",
            "read_range", "delete", "move", "set_attrs", "mkdir", "quota"} <= called


def test_the_core_is_typed_against_the_protocol():
    """The filesystem core, the write-back queue and the node tree name the client only as
    ``MegaApi`` (issue 21 step 4): no ``MegaClient`` import and no client typed ``Any``, so
    mypy checks every call they make against the protocol above."""
    offenders = []
    for area in ("vfs", "writeback", "tree", "fuse"):
        for path in sorted((ROOT / "megafs" / area).rglob("*.py")):
            text = path.read_text()
            if re.search(r"import[^\n]*\bMegaClient\b", text) \
                    or re.search(r"\bclient: *\"?(Any|MegaClient)\b", text):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    annotated = re.compile(r"\bclient: \"(MegaApi|NodeReader)\"")
    for path in ("vfs/core.py", "vfs/readcache.py", "vfs/quota.py", "writeback/queue.py",
                 "tree/changes.py"):
        assert annotated.search((ROOT / "megafs" / path).read_text()), path
