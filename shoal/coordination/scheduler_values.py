"""The scheduler side of the primitives that hold values: Variable, Queue, datasets.

A value is an ``Opaque`` with the keys of the Futures inside it; each primitive keeps
those keys alive through a :class:`~.scheduler_common.KeyHolder` (pseudo-clients
``variable:<name> (<scheduler id>)``, ``queue:…``, ``dataset:…``) until the value is replaced,
taken or deleted. Whoever receives a value is marked as wanting its keys first
(:func:`~.scheduler_common.hand_over`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from shoal._types import Key
from shoal.coordination.messages import (
    DatasetDelete,
    DatasetGet,
    DatasetList,
    DatasetPublish,
    QueueCreate,
    QueueGet,
    QueuePut,
    QueueSize,
    VariableDelete,
    VariableGet,
    VariableSet,
)
from shoal.coordination.scheduler_common import (
    Caller,
    Gone,
    KeyHolder,
    Waiters,
    WaitRegistry,
    deadline_of,
    ensure_known,
    failure,
    gone_reply,
    hand_over,
)
from shoal.protocol.messages import OK, Message
from shoal.protocol.opaque import Opaque

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

Item = tuple[Opaque, tuple[Key, ...]]


class _Variable:
    __slots__ = ("holder", "value", "waiters")

    def __init__(self, scheduler: Scheduler, name: Any) -> None:
        self.value: Item | None = None
        self.waiters = Waiters()
        self.holder = KeyHolder(scheduler, f"variable:{name!r}")


class _Queue:
    __slots__ = ("changed", "holder", "items", "maxsize")

    def __init__(self, scheduler: Scheduler, name: Any, maxsize: int) -> None:
        self.items: deque[Item] = deque()
        self.maxsize = maxsize
        self.changed = Waiters()
        self.holder = KeyHolder(scheduler, f"queue:{name!r}")

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self.items)


class ValueStore:
    """Variables, queues and datasets of one scheduler, by name."""

    def __init__(self, scheduler: Scheduler, registry: WaitRegistry) -> None:
        self.scheduler = scheduler
        self.registry = registry
        self.variables: dict[Any, _Variable] = {}
        self.queues: dict[Any, _Queue] = {}
        self.datasets: dict[Any, tuple[Item, KeyHolder]] = {}

    def handlers(self) -> dict[str, Any]:
        """Request handlers by op."""
        return {
            VariableSet.op: self.variable_set,
            VariableGet.op: self.variable_get,
            VariableDelete.op: self.variable_delete,
            QueueCreate.op: self.queue_create,
            QueuePut.op: self.queue_put,
            QueueGet.op: self.queue_get,
            QueueSize.op: self.queue_size,
            DatasetPublish.op: self.dataset_publish,
            DatasetGet.op: self.dataset_get,
            DatasetDelete.op: self.dataset_delete,
            DatasetList.op: self.dataset_list,
        }

    def remove_client(self, client: str) -> None:
        """``client`` left: wake its waiters, so nothing is taken for it any more."""
        for var in self.variables.values():
            var.waiters.drop_client(client)
        for q in self.queues.values():
            q.changed.drop_client(client)

    def close(self) -> None:
        """The scheduler closes: wake every waiter."""
        for var in self.variables.values():
            var.waiters.close()
        for q in self.queues.values():
            q.changed.close()

    # ------------------------------------------------------------------ Variable

    def _variable(self, name: Any) -> _Variable:
        var = self.variables.get(name)
        if var is None:
            var = self.variables[name] = _Variable(self.scheduler, name)
        return var

    async def variable_set(self, scheduler: Scheduler, msg: Message) -> Message:
        """Set a variable, holding the keys of its new value before dropping the old."""
        assert isinstance(msg, VariableSet)
        error = await ensure_known(scheduler, msg.keys)
        if error is not None:
            return error
        var = self._variable(msg.name)
        var.holder.hold(msg.keys)
        if var.value is not None:
            var.holder.drop(var.value[1])
        var.value = (msg.value, tuple(msg.keys))
        var.waiters.notify_all()
        return OK()

    async def variable_get(self, scheduler: Scheduler, msg: Message) -> Message:
        """The value of a variable, once it has one."""
        assert isinstance(msg, VariableGet)
        deadline = deadline_of(msg.timeout)
        caller = Caller(msg.client, msg.wait_id, self.registry)
        var = self._variable(msg.name)
        try:
            caller.check()
            while var.value is None:
                if not await var.waiters.wait(deadline, caller):
                    return failure(
                        "TimeoutError",
                        f"Variable {msg.name!r} had no value within {msg.timeout} s",
                    )
                var = self._variable(msg.name)
        except Gone as e:
            return gone_reply(e)
        value, keys = var.value
        hand_over(scheduler, msg.client, keys)
        return OK({"value": value, "keys": keys})

    async def variable_delete(self, scheduler: Scheduler, msg: Message) -> Message:
        """Forget a variable's value (waiters keep waiting for a new one)."""
        assert isinstance(msg, VariableDelete)
        var = self.variables.get(msg.name)
        if var is not None:
            if var.value is not None:
                var.holder.drop(var.value[1])
                var.value = None
            if not len(var.waiters):
                del self.variables[msg.name]
        return OK()

    # ------------------------------------------------------------------ Queue

    def _queue(self, name: Any, maxsize: int) -> _Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = _Queue(self.scheduler, name, max(int(maxsize), 0))
        return q

    async def queue_create(self, scheduler: Scheduler, msg: Message) -> Message:
        """Create a queue unless it exists (the first creator's ``maxsize`` holds)."""
        assert isinstance(msg, QueueCreate)
        self._queue(msg.name, msg.maxsize)
        return OK()

    async def queue_put(self, scheduler: Scheduler, msg: Message) -> Message:
        """Append an item once there is room."""
        assert isinstance(msg, QueuePut)
        error = await ensure_known(scheduler, msg.keys)
        if error is not None:
            return error
        deadline = deadline_of(msg.timeout)
        caller = Caller(msg.client, msg.wait_id, self.registry)
        q = self._queue(msg.name, msg.maxsize)
        try:
            caller.check()
            while q.full():
                if not await q.changed.wait(deadline, caller):
                    return failure(
                        "TimeoutError",
                        f"Queue {msg.name!r} stayed full ({q.maxsize} items) for {msg.timeout} s",
                    )
        except Gone as e:
            return gone_reply(e)
        q.holder.hold(msg.keys)
        q.items.append((msg.value, tuple(msg.keys)))
        q.changed.notify_all()
        return OK()

    async def queue_get(self, scheduler: Scheduler, msg: Message) -> Message:
        """Take one item, every item (``batch=True``) or ``batch`` items.

        Items are taken as they come, so that ``batch`` may exceed ``maxsize`` (the room
        they leave lets putters go on); if the wait ends first, they are put back.
        """
        assert isinstance(msg, QueueGet)
        q = self._queue(msg.name, msg.maxsize)
        n = len(q.items) if msg.batch is True else 1 if msg.batch is False else int(msg.batch)
        deadline = deadline_of(msg.timeout)
        caller = Caller(msg.client, msg.wait_id, self.registry)
        items: list[Item] = []
        try:
            caller.check()
            while len(items) < n:
                if q.items:
                    items.append(q.items.popleft())
                    q.changed.notify_all()  # room for a putter
                elif not await q.changed.wait(deadline, caller):
                    _put_back(q, items)
                    what = "no item" if n == 1 else f"fewer than {n} items"
                    return failure(
                        "TimeoutError",
                        f"Queue {msg.name!r} had {what} to get within {msg.timeout} s",
                    )
        except Gone as e:
            _put_back(q, items)
            return gone_reply(e)
        keys = [k for _, ks in items for k in ks]
        hand_over(scheduler, msg.client, keys)
        q.holder.drop(keys)
        q.changed.notify_all()
        return OK({"items": items})

    async def queue_size(self, scheduler: Scheduler, msg: Message) -> Message:
        """How many items a queue holds."""
        assert isinstance(msg, QueueSize)
        q = self.queues.get(msg.name)
        return OK(0 if q is None else len(q.items))

    # ------------------------------------------------------------------ datasets

    async def dataset_publish(self, scheduler: Scheduler, msg: Message) -> Message:
        """Publish datasets, all or none."""
        assert isinstance(msg, DatasetPublish)
        error = await ensure_known(scheduler, [k for _, _, keys in msg.datasets for k in keys])
        if error is not None:
            return error
        # checked after the wait above, so that two publishers of one name can't both win
        if not msg.override:
            taken = [name for name, _, _ in msg.datasets if name in self.datasets]
            if taken:
                return failure(
                    "KeyError",
                    f"Dataset {taken[0]!r} already exists: unpublish it first, or publish "
                    "with override=True",
                )
        for name, value, keys in msg.datasets:
            holder = KeyHolder(scheduler, f"dataset:{name!r}")
            holder.hold(keys)
            old = self.datasets.pop(name, None)
            if old is not None:
                old[1].drop_all()
            self.datasets[name] = ((value, tuple(keys)), holder)
        return OK()

    async def dataset_get(self, scheduler: Scheduler, msg: Message) -> Message:
        """A published dataset."""
        assert isinstance(msg, DatasetGet)
        entry = self.datasets.get(msg.name)
        if entry is None:
            return failure("KeyError", _no_dataset(msg.name, self.datasets))
        (value, keys), _ = entry
        hand_over(scheduler, msg.client, keys)
        return OK({"value": value, "keys": keys})

    async def dataset_delete(self, scheduler: Scheduler, msg: Message) -> Message:
        """Unpublish a dataset and release its keys."""
        assert isinstance(msg, DatasetDelete)
        entry = self.datasets.pop(msg.name, None)
        if entry is None:
            return failure("KeyError", _no_dataset(msg.name, self.datasets))
        entry[1].drop_all()
        return OK()

    async def dataset_list(self, scheduler: Scheduler, msg: Message) -> Message:
        """The published names."""
        assert isinstance(msg, DatasetList)
        return OK(list(self.datasets))


def _put_back(q: _Queue, items: list[Item]) -> None:
    """Return items taken by a get that did not complete, to the front, in order."""
    if items:
        q.items.extendleft(reversed(items))
        q.changed.notify_all()


def _no_dataset(name: Any, datasets: dict[Any, Any]) -> str:
    known = ", ".join(repr(n) for n in list(datasets)[:10]) or "none"
    return f"Dataset {name!r} not found (published: {known}); see client.list_datasets()"
