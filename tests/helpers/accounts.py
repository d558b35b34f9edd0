"""Full accounts for tests: signed up, confirmed and logged in in-process against a local
server (``megafs signup`` and ``login`` without the subprocesses)."""
from __future__ import annotations

import os
import time

from megafs.api import account, commands, sharekeys
from megafs.api.client import MegaClient
from megafs.api.folderlink import owner_listing
from megafs.api.session import Session, account_session_path, write_session_file
from megafs.api.transport import Transport

PASSWORD = "share and share alike"


def full_account(srv, tag: str, state_dir: str | None = None) -> Session:
    """A new confirmed full account with its key pair, logged in (session file written to
    ``state_dir`` when given, as ``megafs login`` would)."""
    email = "%s.%d@example.com" % (tag, time.time_ns())
    transport = Transport(srv.url)
    try:
        account.signup(transport, email, PASSWORD, tag)
        link = [m["link"] for m in srv.mail() if m["to"] == email][-1]
        account.confirm(transport, link)
        session = account.login(transport, email, PASSWORD)
    finally:
        transport.close()
    if state_dir is not None:
        path = account_session_path(srv.url, email, state_dir)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_session_file(session, path)
    return session


def put(client: MegaClient, parent: str, tmp_path, name: str, data: bytes,
        shared: bool = False) -> dict:
    """Upload ``data`` as ``parent/name``; ``shared``: with the ``cr`` keys of the shares
    ``parent`` is inside (as the SDK always sends them)."""
    src = tmp_path / ("src-%s-%d" % (name, time.time_ns()))
    src.write_bytes(data)
    uploaded = client.upload(str(src))
    item = commands.file_node(uploaded, {"n": name}, client.session.master_key)
    command = commands.put_nodes(parent, [item], client.request_id)
    if shared:
        listing = owner_listing(client)
        parents = {n["h"]: n.get("p", "") for n in listing.fetched.nodes}
        command["cr"] = sharekeys.cr_for_put(parents, listing.share_keys, parent,
                                             [uploaded.key.pack()])
    return client.transport.call(command)["f"][0]
