"""The write-back queue: files written through the mount, staged on local disk until MEGA has
confirmed them (``staged``, ``record``, ``queue``, ``store``, ``scheduler``, ``committer``,
``recovery``, ``control``, ``premac``; see ``megafs/ARCHITECTURE.md``).

This file makes ``writeback`` a regular package, so that ``packages = find:`` puts it in the
wheel (``tests/unit/test_packaging.py``)."""
