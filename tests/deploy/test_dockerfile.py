"""The container image: what the Dockerfile promises, checked without Docker; and built
and run where a Docker daemon is at hand and SHOAL_TEST_DOCKER=1 asks for it."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shoal.cli.worker import worker as worker_command

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_the_image_is_slim_python_running_shoal_as_a_non_root_user() -> None:
    steps = instructions()
    (base,) = [arg for kw, arg in steps if kw == "FROM"]
    assert re.fullmatch(r"python:3\.\d+-slim", base)
    (user,) = [arg for kw, arg in steps if kw == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can check it
    (entrypoint,) = [arg for kw, arg in steps if kw == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["shoal"]
    # the same user the Kubernetes manifests run as
    manifest = yaml.safe_load_all((ROOT / "deploy/kubernetes/manifests/worker.yaml").read_text())
    (dep,) = list(manifest)
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    # the user is made before USER switches to it
    (made,) = [i for i, (kw, arg) in enumerate(steps) if kw == "RUN" and "useradd" in arg]
    assert f"--uid {uid}" in steps[made][1]
    assert made < steps.index(("USER", user))


def test_the_image_installs_shoal_with_its_extras_from_this_checkout() -> None:
    steps = instructions()
    installs = [arg for kw, arg in steps if kw == "RUN" and "pip install" in arg]
    assert installs and "[dask]" in installs[0]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "dask" in extras["optional-dependencies"]
    assert extras["scripts"]["shoal"] == "shoal.cli.main:main"
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kw, arg in steps:
        if kw != "COPY":
            continue
        *sources, _dest = arg.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the checkout"
            assert _included(src, ignore), f"COPY {src}: excluded by .dockerignore"


def test_what_the_image_copies_is_enough_to_build_shoal(tmp_path: Path) -> None:
    # The COPY steps replayed into a folder (less what .dockerignore leaves out inside the
    # folders copied), then the wheel built from that folder alone, as the image does.
    src = tmp_path / "src"
    for kw, arg in instructions():
        if kw != "COPY":
            continue
        *sources, dest = arg.split()
        assert dest.startswith("/tmp/shoal-src"), dest
        target = src / dest.removeprefix("/tmp/shoal-src").strip("/")
        for name in sources:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(
                    path, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target / name)
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_COMPILE"}
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip_wheel, "-q", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("shoal-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")  # pure Python


def _included(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching .dockerignore pattern decides."""
    keep = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pat = pattern[1:] if negated else pattern
        if fnmatch.fnmatch(path, pat.rstrip("/")) or fnmatch.fnmatch(path, pat):
            keep = negated
    return keep


def test_every_documented_docker_run_line_uses_the_image_and_a_role() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = [ln for ln in readme.splitlines() if ln.strip().startswith("docker run")]
    roles = set()
    for line in lines:
        m = re.search(r"\bshoal:[\w.]+(?:\s+(\w+))?", line)
        assert m, f"no shoal image in: {line}"
        roles.add(m.group(1))
    assert {"scheduler", "worker"} <= roles
    # and the worker lines parse as shoal worker's arguments
    for line in lines:
        if " worker " in line:
            args = line.split(" worker ", 1)[1].split("#")[0].split()
            worker_command.make_context("worker", args)


@pytest.mark.skipif(
    os.environ.get("SHOAL_TEST_DOCKER") != "1", reason="set SHOAL_TEST_DOCKER=1 to build"
)
def test_the_image_builds_and_runs() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker command")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker daemon reachable")
    tag = "shoal:test-build"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1200)
    out = subprocess.run(
        ["docker", "run", "--rm", tag, "--version"], capture_output=True, text=True, check=True
    )
    assert "shoal" in out.stdout
    who = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert who.stdout.strip() != "0"
