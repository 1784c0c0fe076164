"""miniray's live dashboard (aiohttp; the ``dashboard`` extra).

Importing this package does not import aiohttp; :mod:`miniray.dashboard.routes`
is the registry other sub-libraries add endpoints to.
"""
