"""``python -m rkvideo.cli``: the same as ``rkvideo`` (kept for scripts written before ``python -m rkvideo``)."""
from __future__ import annotations

import sys

from . import main

sys.exit(main())
