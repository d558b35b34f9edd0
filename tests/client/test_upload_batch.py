"""Many uploads' round trips batched (issue 23): ``upload_urls`` asks for every URL in one
request with a per-slot outcome, ``upload(url=...)`` uses a URL asked for beforehand instead of
its own ``u``, and ``put_files`` sends one ``p`` per file so a refused slot fails only its file.
Real client, real local server over HTTP."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import requests

from megafs.api.client import MegaClient, PutItem
from megafs.errors import MegaError


def stats(srv) -> dict:
    resp = requests.get(srv.url + "_megafs/stats", timeout=10)
    resp.raise_for_status()
    return resp.json()


def make_file(tmp_path, size: int, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return str(path)


def test_upload_urls_in_one_request_with_a_refused_slot(client, srv):
    before = stats(srv)
    srv.faults([{"where": "cs", "command": "u", "level": "command", "error": -11,
                 "count": 1}])
    urls = client.upload_urls([10, 4096, 0, 1 << 20])
    after = stats(srv)
    assert after["requests"]["cs"] - before["requests"]["cs"] == 1
    assert after["commands"]["u"] - before["commands"].get("u", 0) == 4
    assert isinstance(urls[0], MegaError) and urls[0].code == -11
    assert all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls[1:])


def test_upload_with_a_url_asked_for_beforehand(client, srv, tmp_path):
    root = client.fetch().roots()[2]
    paths = [make_file(tmp_path, 1000 + i, "f%d.bin" % i) for i in range(5)]
    sizes = [os.path.getsize(p) for p in paths]
    urls = client.upload_urls(sizes)
    u_before = stats(srv)["commands"].get("u", 0)
    uploaded = [client.upload(p, url=(u, s)) for p, u, s in zip(paths, urls, sizes)]
    assert stats(srv)["commands"].get("u", 0) == u_before      # no `u` of their own
    # a URL asked for another size is not used: the upload asks for its own
    other = client.upload(paths[0], url=(urls[1], sizes[0] + 1))
    assert stats(srv)["commands"].get("u", 0) == u_before + 1

    srv.faults([{"where": "cs", "command": "p", "level": "command", "error": -11,
                 "count": 1}])
    p_before = stats(srv)["commands"].get("p", 0)
    nodes = client.put_files([PutItem(root, up, {"n": "b%d" % i})
                              for i, up in enumerate(uploaded + [other])])
    assert stats(srv)["commands"].get("p", 0) - p_before == 6    # one p a file
    assert isinstance(nodes[0], MegaError) and nodes[0].code == -11
    assert all(isinstance(n, dict) for n in nodes[1:])         # only its slot refused
    srv.clear_faults()
    handles = [n["h"] for n in nodes[1:] if isinstance(n, dict)]
    phs = client.export(handles)
    with MegaClient.public(api=srv.url) as pub:
        for i, (node, ph) in enumerate(zip(nodes[1:], phs)):
            assert isinstance(node, dict) and isinstance(ph, str)
            dest = tmp_path / "dl"
            pub.download(client.link_for(node, ph), str(dest))
            src = paths[i + 1] if i + 1 < len(paths) else paths[0]
            assert hashlib.sha256(dest.read_bytes()).digest() == \
                hashlib.sha256(Path(src).read_bytes()).digest()
