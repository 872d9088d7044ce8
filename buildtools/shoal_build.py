"""shoal's build backend: setuptools, plus opt-in compiled state machines.

With ``SHOAL_COMPILE=1`` in the environment, ``pip install .`` (or ``pip wheel .``)
compiles the scheduler's and the workers' state machines (the modules in
:data:`COMPILED`) to C extensions with mypyc, next to their ``.py`` sources; Python
imports the extension first. Without it the build is plain setuptools and shoal is pure
Python. The compiled modules behave the same and pass the same tests, and do the
per-task work of the scheduler and the workers faster (the README's benchmark section
says by how much).

This module is three things:

- the PEP 517 backend named in ``pyproject.toml``: setuptools' own hooks, with mypy
  added to the build requirements when compiling, and editable installs refused when
  compiling (their extensions would land in the work tree and shadow the sources being
  edited);
- :func:`ext_modules`, which ``setup.py`` hands to setuptools;
- a command, ``python buildtools/shoal_build.py DIR``, that compiles the modules in place
  inside ``DIR`` (a copy of the source tree: the benchmark runner and the tests use it).

It needs a C compiler and Python's headers (``apt install gcc python3-dev``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (re-exported PEP 517 hooks)
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

#: The modules compiled with ``SHOAL_COMPILE=1``: the scheduler's and the workers' pure
#: state machines, less their ``events.py`` (compiled, decoding a journal's event with
#: ``cls(**fields)`` fails: "interpreted classes cannot inherit from compiled") and the
#: modules off the per-task path.
COMPILED = tuple(
    f"shoal/scheduler/state/{name}.py"
    for name in (
        "clients",
        "machine",
        "model",
        "moves",
        "names",
        "outgoing",
        "placement",
        "recovery",
        "stealing",
        "transitions",
        "workers",
    )
) + tuple(
    f"shoal/worker/state/{name}.py"
    for name in ("fetch", "instructions", "machine", "model", "resources", "transitions")
)

#: The mypy that compiles them (mypyc ships with mypy); the same range as the test extra.
MYPY = "mypy>=2.4,<3"


def compiling() -> bool:
    """Whether ``SHOAL_COMPILE`` asks for the compiled state machines."""
    return os.environ.get("SHOAL_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")


def ext_modules() -> list[Any]:
    """The extensions setuptools builds: mypyc's, when compiling; none otherwise."""
    if not compiling():
        return []
    from mypyc.build import mypycify

    # Type errors elsewhere (or missing stubs of other libraries) are make check's
    # business, not the build's: only the compiled modules must type-check.
    options = ["--ignore-missing-imports", "--follow-imports=silent"]
    # group_name puts mypyc's shared runtime inside the package, not at the top of
    # site-packages under a hash.
    return mypycify([*options, *COMPILED], opt_level="3", group_name="shoal._mypyc")


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements; only mypy when compiling.

    setuptools finds its own by running ``setup.py``, which imports mypyc when compiling,
    before mypy is there; shoal has no ``setup_requires`` for it to find.
    """
    if compiling():
        return [MYPY]
    return list(_setuptools.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements; an editable install is never compiled."""
    _refuse_compiled_editable()
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' editable wheel; refused when compiling (see the module's docstring)."""
    _refuse_compiled_editable()
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))


def _refuse_compiled_editable() -> None:
    if compiling():
        raise RuntimeError(
            "SHOAL_COMPILE=1 builds a wheel (pip install .), not an editable install: "
            "compiled modules in the work tree would shadow the .py files you edit. "
            "Unset SHOAL_COMPILE for pip install -e ."
        )


def compile_in_place(root: Path) -> None:
    """Compile :data:`COMPILED` inside ``root``, a copy of the source tree.

    The extensions land next to their sources in ``root``; mypyc's C files and objects
    in ``root/build``.
    """
    from setuptools import Distribution

    os.environ["SHOAL_COMPILE"] = "1"
    os.chdir(root)  # mypyc takes the paths relative to the working directory
    dist = Distribution({"name": "shoal", "ext_modules": ext_modules()})
    dist.script_args = ["build_ext", "--inplace"]
    dist.parse_command_line()
    dist.run_commands()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python buildtools/shoal_build.py DIR  (a copy of shoal's source tree)")
    compile_in_place(Path(sys.argv[1]).resolve())
