"""Tune's exception type."""

from __future__ import annotations

__all__ = ["TuneError"]


class TuneError(Exception):
    """An experiment-level or trial-level error raised by Tune itself (not by a trainable)."""
