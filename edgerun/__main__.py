"""Entry point for ``python -m edgerun``."""

import sys

from .cli import main

sys.exit(main())
