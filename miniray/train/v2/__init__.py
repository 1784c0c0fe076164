"""Ray Train v2's import paths (``ray.train.v2.api.*``), for code written against Ray's
newest docs. miniray has one Train implementation; these modules re-export it."""
