"""``WorkerPlugin``: code a client installs on every worker, now and as they join.

``client.register_plugin(plugin)`` pickles the plugin on the client; the scheduler
keeps the bytes without loading them and gives them to every worker, which loads the
plugin and calls ``setup(worker)``. ``client.unregister_worker_plugin(name)`` (and a
worker closing) calls ``teardown(worker)``. In between, ``transition`` sees every
change of state of every task on that worker. Hooks run on the worker's event loop:
keep them short, or hand long work to a thread. ``setup`` and ``teardown`` may be
coroutine functions. This module is shared by the client and the worker; it imports
nothing of either.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["SetupCallback", "WorkerPlugin"]


class WorkerPlugin:
    """Base class of worker plugins (distributed's hook names): override what you need.

    ``name`` names the plugin (registering another one of the same name replaces it,
    after its ``teardown``); without one, the client makes a unique name. With
    ``idempotent = True`` a plugin whose name is already registered is not replaced.
    """

    name: str | None = None
    idempotent: bool = False

    def setup(self, worker: Any) -> Any:
        """Called on each worker when the plugin is installed there."""

    def teardown(self, worker: Any) -> Any:
        """Called on each worker when the plugin is removed or the worker closes."""

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Task ``key`` went from ``start`` to ``finish`` on this worker (the worker's
        states: ``waiting``, ``ready``, ``executing``, ``memory``, ``fetch``, ``flight``,
        ``error``, ``released``, ``forgotten``…); ``stimulus_id`` names the cause. A
        freed result goes from ``memory`` straight to ``forgotten`` (distributed's
        worker passes through ``released``)."""


class SetupCallback(WorkerPlugin):
    """``client.register_worker_callbacks(setup=fn)``: call ``fn`` on every worker.

    ``fn`` gets the worker as ``dask_worker`` if it has a parameter of that name.
    """

    def __init__(self, setup: Callable[..., Any], name: str) -> None:
        self.callback = setup
        self.name = name

    def setup(self, worker: Any) -> Any:
        """Call the callback (with ``dask_worker=worker`` when it takes one)."""
        try:
            wants_worker = "dask_worker" in inspect.signature(self.callback).parameters
        except (TypeError, ValueError):  # no signature (a builtin): call it bare
            wants_worker = False
        return self.callback(dask_worker=worker) if wants_worker else self.callback()
