"""setuptools' entry point; the metadata is in pyproject.toml.

It exists for the opt-in compiled state machines only: ``SHOAL_COMPILE=1 pip install .``
(see ``buildtools/shoal_build.py``).
"""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "buildtools"))
from shoal_build import ext_modules

setup(ext_modules=ext_modules())
