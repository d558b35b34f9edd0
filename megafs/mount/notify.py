"""systemd readiness notification (``Type=notify`` units): ``READY=1`` once the kernel mount
is live, ``STOPPING=1`` when it goes.

The protocol is one datagram to the unix socket named by ``$NOTIFY_SOCKET`` (a leading ``@``
means the abstract namespace), as sd_notify(3) describes; without the variable nothing
happens.  No dependency on libsystemd.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False if there is no one to tell."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError as exc:
        log.info("could not notify systemd (%s): %s", state, exc)
        return False
