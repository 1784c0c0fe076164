"""Integrations with other libraries (``miniray.tune.integration.optuna``)."""
