"""Collect and compare the versions of the packages a cluster's processes must share.

Pickled data and run specs cross processes, so the packages that write and read them
(python, cloudpickle, msgpack, shoal, dask, numpy, pandas) should match across the
client, the scheduler and the workers.  The handshake exchanges :func:`collect_versions`
and logs :func:`compare_versions`' findings; ``client.get_versions(check=True)`` turns
them into an error.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
from typing import Any

__all__ = ["CRITICAL_PACKAGES", "OPTIONAL_PACKAGES", "collect_versions", "compare_versions"]

#: Packages every process must have, compared whenever either side reports them.
CRITICAL_PACKAGES = ("shoal", "cloudpickle", "msgpack", "dask")
#: Packages compared only when both sides have them.
OPTIONAL_PACKAGES = ("numpy", "pandas", "pyarrow", "toolz")


def _package_version(name: str) -> str | None:
    # importlib.metadata does not import the package (importing pandas takes ~0.5 s).
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    if name == "shoal":  # running from a source checkout that is not installed
        import shoal

        return shoal.__version__
    return None


@functools.cache
def _collect() -> tuple[tuple[str, str | None], ...]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in (*CRITICAL_PACKAGES, *OPTIONAL_PACKAGES):
        versions[name] = _package_version(name)
    versions["platform"] = f"{sys.platform}-{platform.machine()}"
    return tuple(versions.items())


def collect_versions() -> dict[str, Any]:
    """Return this process's versions: python, shoal, msgpack, cloudpickle, dask,
    numpy, pandas (``None`` when not installed) and platform.

    Computed once per process; each call returns a fresh dict.
    """
    return dict(_collect())


def _major_minor(version: Any) -> str | None:
    if not isinstance(version, str):
        return None
    return ".".join(version.split(".")[:2])


def compare_versions(local: dict[str, Any], remote: dict[str, Any]) -> list[str]:
    """Describe the mismatches of critical packages between two version dicts.

    python is compared by major.minor; shoal, cloudpickle, msgpack and dask exactly
    (a package missing on one side is a mismatch); numpy and pandas exactly when both
    sides have them.  Returns human-readable lines, empty when all agree.
    """
    problems: list[str] = []
    lp, rp = _major_minor(local.get("python")), _major_minor(remote.get("python"))
    if lp != rp:
        problems.append(
            f"python: local {local.get('python')}, remote {remote.get('python')} "
            "(major.minor must match for pickled data to be portable)"
        )
    for name in CRITICAL_PACKAGES:
        lv, rv = local.get(name), remote.get(name)
        if lv != rv:
            lv, rv = lv or "not installed", rv or "not installed"
            problems.append(f"{name}: local {lv}, remote {rv}")
    for name in OPTIONAL_PACKAGES:
        lv, rv = local.get(name), remote.get(name)
        if lv is not None and rv is not None and lv != rv:
            problems.append(f"{name}: local {lv}, remote {rv}")
    return problems
