"""Import contracts, purity of the state machines, module size budget, public surface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shoal

ROOT = Path(shoal.__file__).parent
MODULES = sorted(ROOT.rglob("*.py"))

PURE = ("scheduler/state/", "worker/state/", "client/state.py")
PURE_BANNED = {
    "asyncio",
    "socket",
    "ssl",
    "threading",
    "time",
    "pickle",
    "cloudpickle",
    "tornado",
    "shoal.comm",
    "shoal.protocol.serialize",
}


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _banned(names: set[str], banned: set[str]) -> set[str]:
    return {n for n in names for b in banned if n == b or n.startswith(b + ".")}


@pytest.mark.parametrize("path", [p for p in MODULES if _rel(p).startswith(PURE)], ids=_rel)
def test_state_machines_are_pure(path: Path) -> None:
    found = _banned(_imports(path), PURE_BANNED)
    # random: only the random.Random type for an injected generator is allowed
    assert not found, f"{_rel(path)} imports {sorted(found)}"
    source = path.read_text()
    assert "random." not in source.replace("random.Random", ""), _rel(path)


@pytest.mark.parametrize("path", [p for p in MODULES if _rel(p).startswith("scheduler/")], ids=_rel)
def test_scheduler_never_unpickles(path: Path) -> None:
    found = _banned(
        _imports(path),
        {"pickle", "cloudpickle", "shoal.protocol.serialize", "shoal.client", "shoal.worker"},
    )
    assert not found, f"{_rel(path)} imports {sorted(found)}"


@pytest.mark.parametrize(
    ("package", "others"),
    [
        ("worker/", {"shoal.client", "shoal.scheduler.state", "shoal.deploy"}),
        ("client/", {"shoal.worker", "shoal.scheduler", "shoal.deploy.process"}),
        ("protocol/", {"shoal.comm", "shoal.scheduler", "shoal.worker", "shoal.client", "asyncio"}),
        ("comm/", {"shoal.scheduler", "shoal.worker", "shoal.client", "shoal.deploy"}),
    ],
)
def test_layers(package: str, others: set[str]) -> None:
    for path in MODULES:
        if _rel(path).startswith(package):
            found = _banned(_imports(path), others)
            # the client starts a LocalCluster for Client(), lazily, like distributed
            found.discard("shoal.deploy.local.LocalCluster")
            found = {f for f in found if not f.startswith("shoal.deploy.local")}
            assert not found, f"{_rel(path)} imports {sorted(found)}"


def test_pickle_only_in_serialize() -> None:
    for path in MODULES:
        if _rel(path) != "protocol/serialize.py":
            assert not _banned(_imports(path), {"pickle", "cloudpickle"}), _rel(path)


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_budget(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= 800, f"{_rel(path)} has {n} lines; split it by concept"


def test_public_surface() -> None:
    for name in shoal.__all__:
        assert hasattr(shoal, name), name
    assert len(set(shoal.__all__)) == len(shoal.__all__)
