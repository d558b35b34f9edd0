"""``megafs serve``: a local MEGA-compatible API server (ciphertext only, never any key).

Layers, bottom up: ``state`` (SQLite + blob files in the data directory), ``handlers`` (one
function per API command and the batch runner), ``transfers`` (upload and download URLs),
``faults`` (fault-injection rules), ``app`` (the process-wide object), ``http`` (routing and
the HTTP server), ``cli`` (the ``serve`` subcommand).  Nothing here imports the client
library or FUSE.
"""
