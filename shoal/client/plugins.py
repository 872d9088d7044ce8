"""Client methods that set the workers up: ``upload_file`` and plugins.

Worker plugins and files go to the scheduler, pickled here; it keeps them as opaque
bytes and gives them to every worker, now and as workers join (see
:mod:`shoal.scheduler.worker_setup`). A scheduler plugin would run this client's code
inside the scheduler: it is installed through ``run_on_scheduler``, so only on a
scheduler started with ``--allow-run-on-scheduler``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from typing import Any

from shoal.errors import RemoteError
from shoal.plugins import SetupCallback
from shoal.protocol.messages import ErrorReply, Message
from shoal.protocol.serialize import dumps, loads
from shoal.protocol.setup_ops import (
    UPLOAD_EXTENSIONS,
    RegisterWorkerPlugin,
    UnregisterWorkerPlugin,
    UploadFile,
)

_SCHEDULER_PLUGIN_REFUSED = (
    "register_plugin got a SchedulerPlugin ({plugin}), which would run this client's "
    "code inside the scheduler process, and this scheduler does not allow that. Install "
    "it where the scheduler starts (Scheduler(plugins=[...])), or start the scheduler "
    "with `shoal scheduler --allow-run-on-scheduler` (LocalCluster("
    "allow_run_on_scheduler=True)) if you trust every client."
)


def is_scheduler_plugin(plugin: Any) -> bool:
    """Whether ``plugin`` is a ``SchedulerPlugin`` (shoal's or distributed's).

    Checked by name: the client does not import the scheduler package.
    """
    return any(
        cls.__name__ == "SchedulerPlugin"
        and cls.__module__.split(".")[0] in ("shoal", "distributed")
        for cls in type(plugin).__mro__
    )


class PluginsMixin:
    """The part of :class:`~shoal.Client` that installs files and plugins on workers."""

    _sync: Callable[..., Any]
    _request: Callable[..., Any]
    _run_on_scheduler: Callable[..., Any]

    def upload_file(self, filename: str | os.PathLike[str], load: bool = True) -> Any:
        """Give a ``.py`` file, or a ``.zip``/``.egg``/``.pyz`` of modules, to every
        worker (and to every worker that joins later): it is put on the workers'
        ``sys.path`` and, with ``load``, its modules are imported (or reloaded).

        Returns ``{worker: {"status": "OK", "nbytes": n}}``; an import that fails on a
        worker raises its exception here.
        """
        path = os.fspath(filename)
        ext = os.path.splitext(path)[1]
        if ext not in UPLOAD_EXTENSIONS:
            raise ValueError(
                f"upload_file takes a .py file or a .zip, .egg or .pyz archive of modules, "
                f"not {path!r}"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"upload_file: there is no file {path!r}")
        with open(path, "rb") as f:
            data = f.read()
        msg = UploadFile(filename=os.path.basename(path), data=dumps(data), load=load)
        return self._sync(self._setup_request, msg)

    def register_plugin(self, plugin: Any, name: str | None = None) -> Any:
        """Install ``plugin`` on the cluster.

        A :class:`~shoal.WorkerPlugin` goes to every worker, and to every worker that
        joins later: its ``setup(worker)`` runs there (a failing setup raises here).
        Returns ``{worker: {"status": "OK"}}``. A :class:`~shoal.SchedulerPlugin` is
        installed in the scheduler, only if the scheduler allows ``run_on_scheduler``.
        """
        if is_scheduler_plugin(plugin):
            return self._sync(self._register_scheduler_plugin, plugin, name)
        if isinstance(plugin, type):
            raise TypeError(f"register_plugin takes a plugin instance, not the class {plugin!r}")
        if not callable(getattr(plugin, "setup", None)):
            raise TypeError(
                f"{plugin!r} is not a worker plugin: subclass shoal.WorkerPlugin (hooks "
                "setup, teardown, transition)"
            )
        name = name or getattr(plugin, "name", None) or f"{type(plugin).__name__}-{uuid.uuid4()}"
        msg = RegisterWorkerPlugin(
            name=name, plugin=dumps(plugin), idempotent=bool(getattr(plugin, "idempotent", False))
        )
        return self._sync(self._setup_request, msg)

    def register_worker_plugin(
        self, plugin: Any = None, name: str | None = None, nanny: bool | None = None
    ) -> Any:
        """The older name of :meth:`register_plugin` for worker plugins."""
        if nanny:
            raise ValueError("shoal has no nanny plugins; register a WorkerPlugin instead")
        return self.register_plugin(plugin, name)

    def register_worker_callbacks(self, setup: Callable[..., Any] | None = None) -> Any:
        """Run ``setup`` on every worker now and on every worker that joins later (a
        parameter named ``dask_worker`` receives the worker). Returns as
        :meth:`register_plugin` does."""
        if not callable(setup):
            raise TypeError(f"register_worker_callbacks needs a callable setup, not {setup!r}")
        name = f"setup-callback-{getattr(setup, '__name__', 'callback')}-{uuid.uuid4()}"
        return self.register_plugin(SetupCallback(setup, name), name)

    def unregister_worker_plugin(self, name: str, nanny: bool | None = None) -> Any:
        """Remove the worker plugin ``name`` from every worker (its ``teardown`` runs).

        Raises ``ValueError`` if no worker plugin has that name.
        """
        return self._sync(self._setup_request, UnregisterWorkerPlugin(name=name))

    def unregister_scheduler_plugin(self, name: str) -> Any:
        """Remove the scheduler plugin ``name`` (needs ``run_on_scheduler``, as
        registering does)."""
        return self._sync(self._unregister_scheduler_plugin, name)

    # ------------------------------------------------------------------ internals

    async def _setup_request(self, msg: Message) -> dict[str, Any]:
        try:
            replies = await self._request(msg)
        except RemoteError as e:
            raise ValueError(str(e)) from None
        result = {}
        for addr, raw in replies.items():
            reply = Message.from_wire(dict(raw))
            if isinstance(reply, ErrorReply):
                exc: BaseException = RemoteError(f"on worker {addr}: {reply.message}")
                if reply.exception is not None:
                    with contextlib.suppress(Exception):
                        exc = loads(reply.exception)
                raise exc
            result[addr] = getattr(reply, "value", None)
        return result

    async def _on_scheduler(self, function: Callable[..., Any], plugin: str) -> Any:
        try:
            return await self._run_on_scheduler(function, (), {})
        except RemoteError as e:
            if "run_on_scheduler is off" in str(e):
                raise PermissionError(_SCHEDULER_PLUGIN_REFUSED.format(plugin=plugin)) from None
            raise

    async def _register_scheduler_plugin(self, plugin: Any, name: str | None) -> Any:
        def install(dask_scheduler: Any) -> Any:
            return dask_scheduler.add_plugin(plugin, name=name)

        return await self._on_scheduler(install, repr(plugin))

    async def _unregister_scheduler_plugin(self, name: str) -> Any:
        def remove(dask_scheduler: Any) -> Any:
            if name not in dask_scheduler.hooks.plugins:
                raise ValueError(f"no scheduler plugin named {name!r} is installed")
            return dask_scheduler.remove_plugin(name)

        return await self._on_scheduler(remove, name)
