"""The filesystem core: POSIX semantics on paths over the node tree and the write-back queue,
open-file handles, the virtual ``.link`` layer and cached remote reads.  Never imports FUSE."""
