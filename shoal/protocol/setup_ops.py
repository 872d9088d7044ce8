"""Ops that set workers up: files uploaded by clients and worker plugins.

A client sends them to the scheduler, which keeps them (as opaque bytes: it never
loads them) and forwards them to every worker, now (as requests, answered ``OK`` or
``ErrorReply``) and to each worker that joins later (on its stream, before any task).
See :mod:`shoal.scheduler.worker_setup` and :mod:`shoal.worker.plugins`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shoal.protocol.messages import Message
from shoal.protocol.opaque import Opaque

__all__ = ["UPLOAD_EXTENSIONS", "RegisterWorkerPlugin", "UnregisterWorkerPlugin", "UploadFile"]

#: What ``upload_file`` accepts: Python sources and zip archives of modules.
UPLOAD_EXTENSIONS = (".py", ".zip", ".egg", ".pyz")


@dataclass(slots=True, unsafe_hash=True)
class UploadFile(Message):
    """Put ``filename`` (a base name; ``data`` is its pickled bytes) in each worker's
    directory, on ``sys.path``; with ``load``, import (or reload) the modules it holds.

    Reply from the scheduler: ``OK({worker: reply-map})``; from a worker:
    ``OK({"nbytes": n})`` or an ``ErrorReply`` carrying the import's exception.
    """

    op: ClassVar[str] = "upload-file"
    filename: str
    data: Opaque
    load: bool = True


@dataclass(slots=True, unsafe_hash=True)
class RegisterWorkerPlugin(Message):
    """Install the pickled ``WorkerPlugin`` ``plugin`` under ``name`` on each worker
    (replacing, after its ``teardown``, a plugin of the same name). Replies as for
    :class:`UploadFile`."""

    op: ClassVar[str] = "register-worker-plugin"
    name: str
    plugin: Opaque
    idempotent: bool = False


@dataclass(slots=True, unsafe_hash=True)
class UnregisterWorkerPlugin(Message):
    """Remove the worker plugin ``name`` (its ``teardown`` runs on each worker).

    The scheduler answers ``ErrorReply`` when no plugin has that name."""

    op: ClassVar[str] = "unregister-worker-plugin"
    name: str
