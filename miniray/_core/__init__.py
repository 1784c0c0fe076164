"""The runtime's private core: node runtime, workers, object store, protocol."""
