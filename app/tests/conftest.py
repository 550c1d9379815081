"""Fixtures for the app tests; the helpers live in apptest_support.

The package is imported from the source tree (app/), installed or not.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apptest_support import spawn

__all__ = ["spawn"]
