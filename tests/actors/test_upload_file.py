"""``client.upload_file``: modules reach every worker process, including later ones."""

from __future__ import annotations

import uuid
import zipapp
import zipfile
from pathlib import Path

import pytest

from shoal import Client, LocalCluster


def _name() -> str:
    return f"shoal_upload_{uuid.uuid4().hex[:10]}"


def test_py_module_reaches_every_worker_and_later_ones(
    c: Client, process_cluster: LocalCluster, tmp_path: Path
) -> None:
    name = _name()
    path = tmp_path / f"{name}.py"
    path.write_text("VERSION = 1\ndef inc(x):\n    return x + VERSION\n")
    replies = c.upload_file(str(path))
    assert set(replies) == set(c.nthreads())
    assert all(r["status"] == "OK" for r in replies.values())
    assert c.submit(lambda x: __import__(name).inc(x), 10).result() == 11

    # a new version replaces the old one: the module is reloaded on the workers
    path.write_text("VERSION = 2\ndef inc(x):\n    return x + VERSION\n")
    c.upload_file(str(path))
    assert set(c.run(lambda: __import__(name).VERSION).values()) == {2}

    # a worker that starts after the upload has it before it runs anything
    process_cluster.scale(3)
    c.wait_for_workers(3)
    try:
        versions = c.run(lambda: __import__("sys").modules[name].VERSION)
        assert len(versions) == 3
        assert set(versions.values()) == {2}
    finally:
        process_cluster.scale(2)


def test_zip_of_a_package(c: Client, tmp_path: Path) -> None:
    name = _name()
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{name}/__init__.py", "from .core import shout\n")
        z.writestr(f"{name}/core.py", "def shout(s):\n    return s.upper() + '!'\n")
    c.upload_file(archive)
    assert c.submit(lambda s: __import__(name).shout(s), "hi").result() == "HI!"


def test_pyz_application(c: Client, tmp_path: Path) -> None:
    """A .pyz made by zipapp has a ``__main__.py``: its modules are imported, never its
    entry point (which would be the worker's own ``__main__``)."""
    name = _name()
    source = tmp_path / "app"
    source.mkdir()
    (source / f"{name}.py").write_text("def twice(x):\n    return 2 * x\n")
    (source / "__main__.py").write_text("raise SystemExit('the entry point ran')\n")
    archive = tmp_path / f"{name}.pyz"
    zipapp.create_archive(source, archive)
    assert all(r["status"] == "OK" for r in c.upload_file(archive).values())
    assert c.submit(lambda x: __import__(name).twice(x), 21).result() == 42


def test_bad_uploads_raise_clear_errors(c: Client, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file"):
        c.upload_file(str(tmp_path / "missing.py"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"\.py file or a \.zip"):
        c.upload_file(str(text))
    broken = tmp_path / f"{_name()}.py"
    broken.write_text("def oops(:\n")
    with pytest.raises(SyntaxError):  # the import failed on the workers
        c.upload_file(str(broken))
    fine = tmp_path / f"{_name()}.py"
    fine.write_text("X = 1\n")
    assert all(r["status"] == "OK" for r in c.upload_file(str(fine)).values())


async def test_upload_and_plugins_with_an_asynchronous_client(tmp_path: Path) -> None:
    from shoal import WorkerPlugin
    from shoal.testing.cluster import cluster

    class Tag(WorkerPlugin):
        name = "tag"

        def setup(self, worker: object) -> None:
            self.ready = True

    name = _name()
    path = tmp_path / f"{name}.py"
    path.write_text("ANSWER = 42\n")
    async with (
        cluster(n_workers=2, nthreads=1) as (s, ws),
        Client(s.address, asynchronous=True) as c,
    ):
        assert set(await c.upload_file(str(path))) == {w.address for w in ws}
        assert await c.submit(lambda: __import__(name).ANSWER) == 42
        await c.register_plugin(Tag())
        assert all(w.plugins["tag"].ready for w in ws)
        await c.unregister_worker_plugin("tag")
        assert all("tag" not in w.plugins for w in ws)
