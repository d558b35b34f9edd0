"""The MEGA client library: transport, HTTP pools, sessions, uploads, downloads, links and the
``MegaClient`` facade.  It never imports FUSE, the node tree, the write-back queue or the mount."""
