"""The mount runtime: the one composition root (``runtime``), daemonizing (``daemon``), the
mount registry (``registry``) and the bundled local server child (``localserver``)."""
