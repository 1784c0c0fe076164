"""``miniray.experimental``: Ray's ``ray.experimental`` names that make sense on one
machine (:mod:`miniray.experimental.tqdm_ray`)."""
