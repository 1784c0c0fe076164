"""The worker process: its client of the node (WorkerClient) and its entry point."""
