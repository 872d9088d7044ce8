"""The whole exception tree of shoal.

::

    ShoalError
    ├─ ProtocolError                 bytes that do not form a valid message
    │  ├─ LocalProtocolError         we were asked to send something invalid
    │  ├─ RemoteProtocolError        the peer sent something invalid
    │  └─ MessageTooLarge            a message (or what its prefix claims) exceeds a limit
    ├─ CommError                     transport-level failures
    │  ├─ CommClosedError            the connection is closed (by us or by the peer)
    │  ├─ ConnectTimeout             no connection could be made in time
    │  └─ HandshakeError             the peer did not complete a valid handshake
    │     ├─ VersionMismatch         incompatible protocol version
    │     └─ AuthenticationFailed    wrong or missing shared secret
    ├─ SerializeError                an object could not be pickled or unpickled
    ├─ TaskError                     a remote exception whose type can't be rebuilt here
    ├─ KilledWorker                  a task was running on too many workers that died
    ├─ NoValidWorker                 no worker can ever run a task (restrictions)
    ├─ FutureCancelledError          the future was cancelled (also a CancelledError)
    ├─ ActorLost                     the worker holding an actor died or released it
    ├─ RemoteError                   a server answered a request with an error
    └─ InternalError                 a bug in shoal; please report it

User exceptions raised inside tasks re-raise in the client as their original type,
with the remote traceback; :class:`TaskError` is used only when the original type
cannot be unpickled in the client.
"""

from __future__ import annotations

import asyncio


class ShoalError(Exception):
    """Root of every error raised by shoal itself."""


class ProtocolError(ShoalError):
    """Bytes on a connection do not form a valid message."""


class LocalProtocolError(ProtocolError):
    """This side was asked to send something that is not a valid message."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that is not a valid message."""


class MessageTooLarge(RemoteProtocolError):
    """A message, or the size its prefix announces, exceeds a configured limit."""


class CommError(ShoalError):
    """A transport-level failure."""


class CommClosedError(CommError):
    """The connection is closed."""


class ConnectTimeout(CommError, TimeoutError):
    """No connection could be established in time."""


class HandshakeError(CommError):
    """The peer did not complete a valid handshake."""


class VersionMismatch(HandshakeError):
    """The peer speaks an incompatible protocol version."""


class AuthenticationFailed(HandshakeError):
    """The peer did not prove knowledge of the cluster's shared secret."""


class SerializeError(ShoalError):
    """An object could not be serialized or deserialized; the message names it."""


class TaskError(ShoalError):
    """A task raised an exception whose type could not be rebuilt in this process.

    ``type_name`` is the remote exception's qualified type name, ``message`` its
    ``str()`` and ``remote_traceback`` the formatted remote traceback.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


class KilledWorker(ShoalError):
    """A task was running on ``allowed_failures`` workers that all died."""

    def __init__(self, key: object, workers: list[str]) -> None:
        super().__init__(
            f"Attempted to run task {key!r} on {len(workers)} different workers, "
            f"all of which died: {workers}. The task may crash its worker "
            "(segfault, out of memory); look at the workers' logs."
        )
        self.task = key
        self.last_workers = workers


class NoValidWorker(ShoalError):
    """No worker satisfies a task's restrictions."""


class FutureCancelledError(ShoalError, asyncio.CancelledError):
    """The future was cancelled before it finished."""

    def __init__(self, key: object, reason: str | None = None) -> None:
        msg = f"Future for {key!r} was cancelled"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)
        self.key = key
        self.reason = reason


class ActorLost(ShoalError):
    """An actor can't be reached: its worker died, or the actor was released there.

    The actor's state is gone, and, as in distributed, it is not made again: its future
    errs with ``ActorLost`` too. Submit the actor again to make a new one.
    """


class RemoteError(ShoalError):
    """A server answered a request with an error message.

    ``reply`` is the ``ErrorReply`` itself when there is one (it may carry the pickled
    exception, as an opaque payload).
    """

    def __init__(self, message: str, reply: object = None) -> None:
        super().__init__(message)
        self.reply = reply


class InternalError(ShoalError):
    """A bug in shoal; please report it with the traceback."""
