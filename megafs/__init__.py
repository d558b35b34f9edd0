"""megafs: a FUSE filesystem over MEGA, with a local MEGA-compatible API server."""
from __future__ import annotations

__version__ = "0.1.0"
DEFAULT_API = "https://g.api.mega.co.nz/"
