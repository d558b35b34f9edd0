"""The FUSE adapter: the libfuse 3 binding (mfusepy), argument and errno translation, mount
options, and the CPython thread-state workaround.  No filesystem logic."""
