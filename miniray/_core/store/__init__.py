"""The object store: shared-memory segments and arenas, serialization, spilling, store sizing."""
