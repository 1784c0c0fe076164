"""The node process: the runtime (NodeRuntime and its components), its event bus, metrics and watchdogs."""
