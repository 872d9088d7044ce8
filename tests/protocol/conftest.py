"""Make the source tree importable when pytest runs without an installed shoal."""

import importlib.util
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if importlib.util.find_spec("shoal") is None and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
