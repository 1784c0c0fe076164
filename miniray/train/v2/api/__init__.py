"""``ray.train.v2.api``: the public Train v2 modules (re-exports of :mod:`miniray.train`)."""
