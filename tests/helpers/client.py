"""Client-side test helpers shared by the client tests."""
from __future__ import annotations

from megafs.api import commands, sharekeys
from megafs.api.client import MegaClient, PutItem
from megafs.api.folderlink import owner_listing
from megafs.retry import RetryPolicy


def fast_retry(give_up: float = 30.0) -> RetryPolicy:
    """Retries of 20 ms doubling to 0.3 s, giving up after ``give_up`` seconds."""
    return RetryPolicy(initial=0.02, cap=0.3, give_up_after=give_up)


def put(client: MegaClient, parent: str, tmp_path, name: str, data: bytes,
        cr_for: str | None = None) -> dict:
    """Upload ``data`` as ``parent/name`` (by the owner ``client``; the file first written to
    ``tmp_path``); with ``cr_for`` (the exported folder) the ``p``
    carries the ``cr`` keys ``sharekeys.cr_for_put`` computes from a fresh listing."""
    src = tmp_path / ("src-" + name)
    src.write_bytes(data)
    uploaded = client.upload(str(src))
    if cr_for is None:
        node = client.put_files([PutItem(parent, uploaded, {"n": name})])[0]
        assert isinstance(node, dict), node
        return node
    listing = owner_listing(client)
    parents = {n["h"]: n.get("p", "") for n in listing.fetched.nodes}
    item = commands.file_node(uploaded, {"n": name}, client.session.master_key)
    command = commands.put_nodes(parent, [item], client.request_id)
    cr = sharekeys.cr_for_put(parents, listing.share_keys, parent, [uploaded.key.pack()])
    assert cr is not None and cr[0] == [cr_for]
    command["cr"] = cr
    return client.transport.call(command)["f"][0]


def folders_in_one_request(client: MegaClient, parent: str, name: str, count: int) -> str:
    """A folder ``name`` under ``parent`` holding ``count`` empty folders ``d0000``..., made
    with one ``p`` (a big listing without a request per folder); returns its handle."""
    session = client._need_session()
    top = client.mkdir(parent, name)["h"]
    nodes = [commands.folder_node({"n": "d%04d" % i}, session.master_key) for i in range(count)]
    reply = client.transport.batch([commands.put_nodes(top, nodes, client.request_id)])[0]
    assert isinstance(reply, dict), reply
    return top
