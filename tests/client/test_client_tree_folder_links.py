"""A folder link made through the node tree (``tree/remote.py`` ``export_folder``, what
``cat DIR.link`` uses) against the real local server: a tree that does not know the folder's
share key (another client exported it; the news not seen) takes the key the server answers to
``s2`` (``{"ok": ...}``) and gives the very same link; revoking through the tree ends it and
forgets the key; an undecryptable folder gets no link, in one clear error."""
from __future__ import annotations

import pytest

from megafs.api.folderlink import export_folder, format_folder_link
from megafs.api.publicfolder import PublicFolder
from megafs.errors import ApiCode, MegaError
from megafs.tree import remote
from megafs.tree.tree import Tree


def fresh_tree(client) -> Tree:
    """The account's tree from ``f`` without its share keys (as a mount that missed them)."""
    listing = client.fetch()
    tree = Tree(client.session.master_key, client.session.user_handle)
    tree.load(listing.nodes, listing.public)
    return tree


def test_the_tree_adopts_the_share_key_of_a_folder_exported_elsewhere(client, srv):
    root = client.fetch().roots()[2]
    folder = client.mkdir(root, "elsewhere")["h"]
    link = export_folder(client, folder)
    tree = fresh_tree(client)
    assert tree.shares.get(folder) is None
    public, key = remote.export_folder(client, tree, folder)
    assert format_folder_link(public, key) == link and tree.shares.get(folder) == key
    # revoked through the tree: the link is gone, the key forgotten
    remote.unexport_folder(client, tree, folder)
    assert tree.shares.get(folder) is None and tree.get(folder).public is None
    with pytest.raises(MegaError) as ei, PublicFolder(link, api=srv.url) as reader:
        reader.listing()
    assert ei.value.code == ApiCode.ENOENT
    # a folder whose key this account cannot read gets no link
    tree.get(folder).key = None
    with pytest.raises(MegaError) as ei:
        remote.export_folder(client, tree, folder)
    assert ei.value.code == ApiCode.EKEY and "cannot be decrypted" in str(ei.value)
