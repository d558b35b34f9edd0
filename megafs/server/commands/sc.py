"""The server-client channel: ``sc?sn=..&sid=..`` answers the action packets after ``sn``, or,
when there are none, a wait URL on the wait listener (its own port, as the real wait URLs are
on another host: protocol reference §11.1).

An ``sn`` older than the oldest packet still kept for the account answers ``-6`` (ETOOMANY:
the client has fallen too far behind and must reload the tree with ``f``; meganz/sdk
src/megaclient.cpp; protocol reference §11.1).  The log is bounded by ``State.prune_packets``.
An ``sn`` this server never issued (past its newest sequence number: forged, or from before its
data dir was reset; 2^63 and more included) answers ``-6`` too, so the client reloads.
"""
from __future__ import annotations

import logging

from ...errors import ApiCode
from ..db import decode_sn, encode_sn
from ..store import State
from .batch import dumps
from .shares import link_feed

log = logging.getLogger(__name__)

MAX_SC_PACKETS = 1000


def run_sc(state: State, *, sid: str | None, sn: str | None, wait_base: str,
           folder: str | None = None) -> tuple[bytes, bool]:
    """Answer one poll: (body, is_warning).  ``folder``: a folder-link session's public
    handle (``n=``): the poll reads that link's feed (``shares.emit_to_sharees``), and a link
    that is gone answers ``-9`` as its ``f`` does."""
    if sid is None and folder is None:
        return dumps(ApiCode.ESID), False
    with state.lock:
        tx = state.read()
        if folder is not None:
            root = tx.exported_folder(folder)
            if root is None:
                return dumps(ApiCode.ENOENT), False
            uh: str | None = link_feed(root["h"])
        else:
            assert sid is not None
            uh = tx.session_user(sid)
        if uh is None:
            return dumps(ApiCode.ESID), False
        if sn is None:
            log.warning("sc: no 'sn' parameter; answering -2")
            return dumps(ApiCode.EARGS), True
        seq = decode_sn(sn)
        if seq is None:
            log.warning("sc: malformed 'sn' %r; answering -2", sn[:20])
            return dumps(ApiCode.EARGS), True
        if seq > tx.current_seq():
            log.info("sc: sn %s of %s was never issued; answering -6", sn[:20], uh)
            return dumps(ApiCode.ETOOMANY), False
        floor = tx.packet_floor(uh)
        if seq < floor:
            log.info("sc: sn %s of %s is older than its packet log; answering -6", sn, uh)
            return dumps(ApiCode.ETOOMANY), False
        packets = tx.packets_after(uh, seq, MAX_SC_PACKETS)
    if packets:
        return dumps({"a": [p for _, p in packets], "sn": encode_sn(packets[-1][0])}), False
    return dumps({"w": "%swsc/%s/%s" % (wait_base, uh, sn), "sn": sn}), False
