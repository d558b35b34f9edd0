"""The remote node tree: decrypted nodes, display names, and the change feed that keeps the
tree up to date with action packets.  No FUSE, no queue."""
