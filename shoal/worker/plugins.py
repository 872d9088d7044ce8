"""Worker plugins and uploaded files, on the worker (``worker.plugins``).

Both arrive from the scheduler (:mod:`shoal.scheduler.worker_setup`): as requests when
a client registers them, and on the scheduler stream when this worker (re)joins, ahead
of its first tasks. The same payload arriving twice (a reconnect, or a join racing a
registration) is installed once.

- an uploaded ``.py`` file is written to this worker's files directory, which is on
  ``sys.path``; an ``.egg``, ``.zip`` or ``.pyz`` goes on ``sys.path`` itself. With
  ``load`` its modules are imported, or reloaded if already imported, so the next
  tasks use the new code;
- a plugin is unpickled, its ``setup(worker)`` awaited if it returns an awaitable, and,
  if it has a ``transition`` hook, the worker state machine's transition listener calls
  it after every transition.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import pkgutil
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from shoal._types import Key
from shoal.errors import SerializeError
from shoal.plugins import WorkerPlugin
from shoal.protocol.messages import OK, ErrorReply, Message
from shoal.protocol.serialize import loads
from shoal.protocol.setup_ops import (
    UPLOAD_EXTENSIONS,
    RegisterWorkerPlugin,
    UnregisterWorkerPlugin,
    UploadFile,
)
from shoal.worker import execute

if TYPE_CHECKING:
    from shoal.worker.server import Worker

logger = logging.getLogger("shoal.worker.plugins")

__all__ = ["WorkerPlugins", "import_file"]


def import_file(path: str) -> list[ModuleType]:
    """Import (or reload) the modules in ``path``: a ``.py`` file, or the top-level
    modules and packages of a zip archive, which must already be on ``sys.path``."""
    name, ext = os.path.splitext(os.path.basename(path))
    if ext == ".py":
        names = [name]
        with contextlib.suppress(OSError):  # a stale .pyc must not win over the new source
            os.remove(importlib.util.cache_from_source(path))
    else:
        names = _archive_modules(path)
    importlib.invalidate_caches()
    loaded = []
    for module_name in names:
        module = sys.modules.get(module_name)
        if module is not None:
            loaded.append(importlib.reload(module))
        else:
            loaded.append(importlib.import_module(module_name))
    return loaded


def _archive_modules(path: str) -> list[str]:
    """The top-level modules and packages of a zip archive, but its ``__main__`` (a
    ``.pyz``'s entry point: importing that name would reload the worker's own main)."""
    return [m.name for m in pkgutil.iter_modules([path]) if m.name != "__main__"]


def _overrides_transition(plugin: Any) -> bool:
    hook = getattr(type(plugin), "transition", None)
    return callable(hook) and hook is not WorkerPlugin.transition


class WorkerPlugins(Mapping[str, Any]):
    """The plugins installed on one worker (a mapping name → plugin) and its files."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._plugins: dict[str, Any] = {}
        #: name → digest of the pickled plugin / filename → digest of the file
        self._plugin_digests: dict[str, bytes] = {}
        self._file_digests: dict[str, bytes] = {}
        self._watching: list[Any] = []
        #: where uploaded files go (made on the first upload, removed on close)
        self.directory: str | None = None
        for op in (UploadFile.op, RegisterWorkerPlugin.op, UnregisterWorkerPlugin.op):
            worker.extra_handlers[op] = self.answer

    def __getitem__(self, name: str) -> Any:
        return self._plugins[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._plugins)

    def __len__(self) -> int:
        return len(self._plugins)

    async def answer(self, msg: Message) -> Message:
        """Install or remove what ``msg`` carries; never raises (it also runs on the
        scheduler stream, which must go on whatever happens here)."""
        try:
            if isinstance(msg, UploadFile):
                return await self._upload(msg)
            if isinstance(msg, RegisterWorkerPlugin):
                return await self._register(msg)
            if isinstance(msg, UnregisterWorkerPlugin):
                return await self._unregister(msg.name)
        except Exception as exc:  # a full disk, a directory that vanished...
            e_opaque, _, text, tb_text = execute.pack_exception(exc)
            return ErrorReply(
                f"{msg.op} failed on worker {self.worker.address}: {text}\n{tb_text}",
                exception=e_opaque,
            )
        return ErrorReply(f"unexpected {msg.op!r}")  # pragma: no cover - see __init__

    # ------------------------------------------------------------------ files

    def _files_directory(self) -> str:
        if self.directory is None:
            self.directory = tempfile.mkdtemp(
                prefix="shoal-files-", dir=self.worker.data.local_directory or None
            )
        if self.directory not in sys.path:
            sys.path.insert(0, self.directory)
        return self.directory

    async def _upload(self, msg: UploadFile) -> Message:
        filename = msg.filename
        ext = os.path.splitext(filename)[1]
        if os.path.basename(filename) != filename or ext not in UPLOAD_EXTENSIONS:
            return ErrorReply(f"refused to store {filename!r}: not a {UPLOAD_EXTENSIONS} file name")
        try:
            data = loads(msg.data)
        except SerializeError as e:
            return ErrorReply(f"worker {self.worker.address} could not load {filename!r}: {e}")
        if not isinstance(data, bytes):
            return ErrorReply(f"the upload of {filename!r} does not hold bytes")
        digest = hashlib.sha256(data).digest()
        path = os.path.join(self._files_directory(), filename)
        same = self._file_digests.get(filename) == digest
        if not same:
            _write_whole(path, data)
            self._file_digests[filename] = digest
        if ext != ".py" and path not in sys.path:
            sys.path.insert(0, path)
        if msg.load and not (same and self._imported(path)):
            try:
                import_file(path)
            except Exception as exc:
                e_opaque, _, text, tb_text = execute.pack_exception(exc)
                return ErrorReply(
                    f"worker {self.worker.address} could not import {filename!r}: "
                    f"{text}\n{tb_text}",
                    exception=e_opaque,
                )
        return OK({"status": "OK", "nbytes": len(data)})

    @staticmethod
    def _imported(path: str) -> bool:
        name, ext = os.path.splitext(os.path.basename(path))
        names = [name] if ext == ".py" else _archive_modules(path)
        return all(n in sys.modules for n in names)

    # ------------------------------------------------------------------ plugins

    async def _register(self, msg: RegisterWorkerPlugin) -> Message:
        name = msg.name
        digest = hashlib.sha256(b"".join(bytes(f) for f in msg.plugin.frames)).digest()
        if name in self._plugins and (msg.idempotent or self._plugin_digests[name] == digest):
            self._refresh()  # sent again after a reconnect: the state machine is new
            return OK({"status": "OK"})
        try:
            plugin = loads(msg.plugin)
        except SerializeError as e:
            return ErrorReply(f"worker {self.worker.address} could not load plugin {name!r}: {e}")
        old = self._plugins.pop(name, None)
        self._plugin_digests.pop(name, None)
        if old is not None:
            await self._teardown(name, old)
        try:
            await _maybe_await(plugin.setup(self.worker) if hasattr(plugin, "setup") else None)
        except Exception as exc:
            self._refresh()
            e_opaque, _, text, tb_text = execute.pack_exception(exc)
            return ErrorReply(
                f"the setup of plugin {name!r} failed on worker {self.worker.address}: "
                f"{text}\n{tb_text}",
                exception=e_opaque,
            )
        self._plugins[name] = plugin
        self._plugin_digests[name] = digest
        self._refresh()
        return OK({"status": "OK"})

    async def _unregister(self, name: str) -> Message:
        plugin = self._plugins.pop(name, None)
        self._plugin_digests.pop(name, None)
        self._refresh()
        if plugin is not None:
            await self._teardown(name, plugin)
        return OK({"status": "OK"})

    async def _teardown(self, name: str, plugin: Any) -> None:
        if not hasattr(plugin, "teardown"):
            return
        try:
            await _maybe_await(plugin.teardown(self.worker))
        except Exception:
            logger.exception("the teardown of plugin %r failed on %s", name, self.worker.address)

    def _refresh(self) -> None:
        """Listen to the state machine's transitions while some plugin wants them."""
        self._watching = [p for p in self._plugins.values() if _overrides_transition(p)]
        listener = self._on_transition if self._watching else None
        self.worker.state.transition_listener = listener

    def _on_transition(self, key: Key, start: str, finish: str, stimulus_id: str) -> None:
        for plugin in self._watching:
            try:
                plugin.transition(key, start, finish, stimulus_id=stimulus_id)
            except Exception:
                logger.exception("plugin %r failed in transition", plugin)

    async def close(self) -> None:
        """Tear every plugin down and remove the files directory (the worker closes)."""
        plugins, self._plugins = self._plugins, {}
        self._plugin_digests.clear()
        self._watching = []
        for name, plugin in plugins.items():
            await self._teardown(name, plugin)
        if self.directory is not None:
            for entry in [self.directory, *self._archives()]:
                with contextlib.suppress(ValueError):
                    sys.path.remove(entry)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _archives(self) -> list[str]:
        assert self.directory is not None
        names = [f for f in self._file_digests if not f.endswith(".py")]
        return [os.path.join(self.directory, f) for f in names]


def _write_whole(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a task may be importing it)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
