"""``python -m megafs`` is the ``megafs`` command."""
from __future__ import annotations

from .cli.entry import main

main()
