import platform

from shoal.protocol.versions import collect_versions, compare_versions


def test_collect_versions() -> None:
    v = collect_versions()
    assert v["python"] == platform.python_version()
    for name in ["shoal", "msgpack", "cloudpickle", "dask", "numpy", "pandas"]:
        assert isinstance(v[name], str), name
    assert isinstance(v["platform"], str)
    v["python"] = "mutated"
    assert collect_versions()["python"] == platform.python_version()


def test_no_mismatch_with_self() -> None:
    assert compare_versions(collect_versions(), collect_versions()) == []


def test_python_compared_by_major_minor() -> None:
    base = collect_versions()
    major, minor, _ = platform.python_version_tuple()
    assert compare_versions(base, {**base, "python": f"{major}.{minor}.999"}) == []
    (problem,) = compare_versions(base, {**base, "python": "2.7.18"})
    assert "python" in problem
    assert "2.7.18" in problem


def test_critical_packages() -> None:
    base = collect_versions()
    problems = compare_versions(base, {**base, "cloudpickle": "0.1", "msgpack": None})
    assert len(problems) == 2
    assert any("cloudpickle" in p and "0.1" in p for p in problems)
    assert any("msgpack" in p and "not installed" in p for p in problems)


def test_optional_packages_only_when_both_present() -> None:
    base = collect_versions()
    assert compare_versions(base, {**base, "numpy": None, "pandas": None}) == []
    (problem,) = compare_versions(base, {**base, "numpy": "0.0.1"})
    assert "numpy" in problem
