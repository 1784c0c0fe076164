"""The driver's side: the in-process driver client, the remote driver, sessions and the head node."""
