"""``python -m miniray ...`` runs the ``miniray`` command line."""

import sys

from .cli import main

sys.exit(main())
