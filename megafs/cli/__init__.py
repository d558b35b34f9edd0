"""The ``megafs`` command: the parser and dispatch (``main``) and one module per group of
subcommands.  Commands print one line per error and exit non-zero; no tracebacks."""
