"""``python -m rkvideo``: the ``rkvideo`` command, for a venv without its console script on PATH."""
from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
