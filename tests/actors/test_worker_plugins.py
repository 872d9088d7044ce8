"""Worker plugins on worker processes (setup, transition, teardown; later workers too),
and scheduler plugins, refused unless the scheduler allows run_on_scheduler."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shoal import Client, LocalCluster, SchedulerPlugin, WorkerPlugin, get_worker


def make_recorder(teardown_log: str) -> WorkerPlugin:
    class Recorder(WorkerPlugin):
        name = "recorder"

        def __init__(self) -> None:
            self.worker_address: str | None = None
            self.transitions: list[tuple[Any, str, str]] = []

        def setup(self, worker: Any) -> None:
            self.worker_address = worker.address

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            assert "stimulus_id" in kwargs
            self.transitions.append((key, start, finish))

        def teardown(self, worker: Any) -> None:
            with open(teardown_log, "a") as f:
                f.write(worker.address + "\n")

    return Recorder()


def recorder_state() -> Any:
    plugin = get_worker().plugins.get("recorder")
    if plugin is None:
        return None
    return plugin.worker_address, list(plugin.transitions)


def test_worker_plugin_hooks_on_every_worker(
    c: Client, process_cluster: LocalCluster, tmp_path: Path
) -> None:
    log = tmp_path / "teardowns"
    replies = c.register_plugin(make_recorder(str(log)))
    assert set(replies) == set(c.nthreads())
    states = c.run(recorder_state)
    assert {addr: state[0] for addr, state in states.items()} == {a: a for a in states}

    fut = c.submit(lambda x: x + 1, 1, key="plugged-inc")
    assert fut.result() == 2
    where = c.who_has([fut])["plugged-inc"][0]
    seen = c.run(recorder_state)[where][1]
    assert ("plugged-inc", "ready", "executing") in seen
    assert ("plugged-inc", "executing", "memory") in seen

    # a worker that joins later gets the plugin before it runs anything
    process_cluster.scale(3)
    c.wait_for_workers(3)
    try:
        states = c.run(recorder_state)
        assert len(states) == 3
        assert all(s is not None and s[0] == addr for addr, s in states.items())
    finally:
        process_cluster.scale(2)
        deadline = time.monotonic() + 20
        while len(c.nthreads()) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    # the worker that left tore the plugin down as it closed ...
    assert log.exists() and len(log.read_text().split()) == 1
    # ... and unregistering calls teardown on every worker and removes the plugin
    c.unregister_worker_plugin("recorder")
    torn_down = log.read_text().split()
    assert len(torn_down) == 3 and set(c.nthreads()) <= set(torn_down)
    assert set(c.run(recorder_state).values()) == {None}


def test_register_worker_callbacks_runs_on_every_worker(c: Client, tmp_path: Path) -> None:
    def touch(dask_worker: Any) -> None:
        (tmp_path / dask_worker.name).write_text(dask_worker.address)

    replies = c.register_worker_callbacks(touch)
    assert set(replies) == set(c.nthreads())
    assert {p.read_text() for p in tmp_path.iterdir()} == set(c.nthreads())
    with pytest.raises(TypeError, match="callable"):
        c.register_worker_callbacks(None)


def test_bad_plugin_use_raises_clear_errors(c: Client) -> None:
    with pytest.raises(ValueError, match="no worker plugin named 'nobody'"):
        c.unregister_worker_plugin("nobody")
    with pytest.raises(TypeError, match="plugin instance"):
        c.register_plugin(WorkerPlugin)
    with pytest.raises(TypeError, match="not a worker plugin"):
        c.register_plugin(object())

    class Failing(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            raise RuntimeError("no setup for you")

    with pytest.raises(RuntimeError, match="no setup for you"):
        c.register_plugin(Failing(), name="failing")
    assert set(c.run(lambda: "failing" in get_worker().plugins).values()) == {False}
    with pytest.raises(ValueError, match="no nanny plugins"):
        c.register_worker_plugin(WorkerPlugin(), nanny=True)


def test_register_worker_plugin_is_the_older_name(c: Client) -> None:
    replies = c.register_worker_plugin(WorkerPlugin(), name="plain")
    assert set(replies) == set(c.nthreads())
    assert set(c.run(lambda: "plain" in get_worker().plugins).values()) == {True}
    c.unregister_worker_plugin("plain")
    assert set(c.run(lambda: "plain" in get_worker().plugins).values()) == {False}


class Watcher(SchedulerPlugin):
    """A scheduler plugin that counts the transitions to memory it sees."""

    name = "watcher"

    def __init__(self) -> None:
        self.in_memory: list[Any] = []

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory":
            self.in_memory.append(key)


def test_scheduler_plugin_refused_without_run_on_scheduler(c: Client) -> None:
    with pytest.raises(PermissionError, match="allow-run-on-scheduler"):
        c.register_plugin(Watcher())


def test_scheduler_plugin_installed_when_the_scheduler_allows_it() -> None:
    with (
        LocalCluster(
            n_workers=1, processes=False, dashboard_address=None, allow_run_on_scheduler=True
        ) as cluster,
        Client(cluster) as c,
    ):
        assert c.register_plugin(Watcher()) == "watcher"
        assert c.submit(lambda: 42, key="watched").result() == 42
        assert cluster.scheduler is not None
        plugin = cluster.scheduler.hooks.plugins["watcher"]
        assert isinstance(plugin, Watcher)
        assert "watched" in plugin.in_memory
        c.unregister_scheduler_plugin("watcher")
        assert "watcher" not in cluster.scheduler.hooks.plugins
