"""The shape every endpoint has, so that routing and fault injection are done once for all.

An endpoint first ``prepare``s a request (reads what it must to know which commands or which
resource it is about, and answers at once what needs no further work, e.g. an unknown download
URL), then the dispatcher decides and applies faults for the endpoint's ``channel`` in one
place (``fault_apply.py``), then the endpoint ``serve``s it, handed the fault's effect on the
answer's body when a download is to be tampered with, truncated, cut or framed differently.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import App
    from .request import Request


@dataclass
class Prepared:
    commands: list[str] = field(default_factory=list)   # cs: the batch's command names
    sub: str | None = None          # sc channel: "sc" (the poll) or "wait" (the wait URL)
    hashcash_ok: bool = False       # cs: carries a valid answer to one of our challenges
    token: str = ""                 # upload: the URL's token (for "expire")
    length: int = 0                 # download: bytes to send
    data: Any = None                # anything else the endpoint keeps between its two steps


@dataclass(frozen=True)
class StreamEffect:
    """A fault that changes how a download body is sent: "tamper" (flip one byte), "truncate"
    (send fewer bytes than announced), "drop" (cut the connection halfway) or "framing"
    (``value`` "chunked" or "close": no Content-Length)."""

    action: str
    value: Any = None


class Endpoint(ABC):
    """One route's handler: ``prepare`` (optional) then ``serve`` (every endpoint defines it)."""

    channel: str | None = None      # the fault channel ("cs", "upload", "download", "sc")
    kind: str = ""                  # the request kind counted in the stats

    def prepare(self, app: "App", req: "Request") -> Prepared | None:
        """Return what ``serve`` needs, or None once the request has been answered."""
        return Prepared()

    @abstractmethod
    def serve(self, app: "App", req: "Request", prep: Prepared,
              effect: StreamEffect | None) -> None:
        """Answer the request (the fault ``effect``, if any, applied to its stream)."""
