"""``megafs serve``: a local MEGA-compatible API server (ciphertext only, never any key), strict
by default: it behaves as the real service does where that is known, and refuses where a
lenient answer would hide a client bug.  ``DESIGN.md`` beside this file describes the layers,
the request path and what differs from the real service.

Layers, bottom up: ``db``/``tx``/``store`` (SQLite + blob files), ``blobio``, ``uploads``,
``janitor`` (housekeeping), ``commands/`` (one handler per API command, the batch runner, the
``sc`` poll), ``faults`` (rule parsing and decisions), ``hashcash``, ``transfer_quota``,
``config`` (settings and run-time policies), ``app`` (the process-wide object), ``web/``
(listeners, route table, fault application, endpoints), ``tls`` and ``cli``.  Nothing here
imports the client library or FUSE.
"""
