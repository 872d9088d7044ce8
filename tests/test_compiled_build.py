"""The opt-in compiled state machines (``SHOAL_COMPILE=1``, ``buildtools/shoal_build.py``).

One test compiles a copy of ``shoal/`` with mypyc and runs the state machines' tests and
a few end-to-end test files against it, in a subprocess that imports the copy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Run against the compiled copy: every state machine test, and clients driving a real
#: cluster (threads and processes) through both machines.
COMPILED_SUITE = [
    "tests/scheduler/state",
    "tests/worker/state",
    "tests/client/test_sync_api.py",
    "tests/client/test_collections_processes.py",
]


def load_backend() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "shoal_build", ROOT / "buildtools" / "shoal_build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_is_plain_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = load_backend()
    monkeypatch.delenv("SHOAL_COMPILE", raising=False)
    assert not backend.compiling()
    assert backend.ext_modules() == []
    assert backend.MYPY not in backend.get_requires_for_build_wheel()


def test_compiling_asks_for_mypy_and_refuses_editable_installs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = load_backend()
    monkeypatch.setenv("SHOAL_COMPILE", "1")
    assert backend.compiling()
    assert backend.get_requires_for_build_wheel() == [backend.MYPY]
    with pytest.raises(RuntimeError, match="not an editable install"):
        backend.get_requires_for_build_editable()
    with pytest.raises(RuntimeError, match="Unset SHOAL_COMPILE"):
        backend.build_editable(str(tmp_path))


def test_every_compiled_module_exists_and_events_stay_interpreted() -> None:
    backend = load_backend()
    for path in backend.COMPILED:
        assert (ROOT / path).is_file(), path
    assert "shoal/scheduler/state/events.py" not in backend.COMPILED
    assert "shoal/worker/state/events.py" not in backend.COMPILED


def c_compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("mypyc") is None, reason="needs mypy (test extra)")
@pytest.mark.skipif(c_compiler() is None, reason="needs a C compiler (apt install gcc)")
@pytest.mark.skipif(
    not Path(sysconfig.get_paths()["include"], "Python.h").exists(),
    reason="needs Python's headers (apt install python3-dev)",
)
def test_the_compiled_state_machine_passes_the_tests(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "shoal", tmp_path / "shoal", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    build = subprocess.run(
        [sys.executable, str(ROOT / "buildtools" / "shoal_build.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    # The copy comes first on the path (cwd and PYTHONPATH, for the workers' processes
    # too); the test files come from the repository.
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import shoal.scheduler.state.machine as s, shoal.worker.state.machine as w;"
            "print(s.__loader__, w.__loader__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.count("ExtensionFileLoader") == 2, where.stdout + where.stderr

    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
        + [str(ROOT / path) for path in COMPILED_SUITE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert suite.returncode == 0, suite.stdout[-6000:] + suite.stderr[-3000:]
