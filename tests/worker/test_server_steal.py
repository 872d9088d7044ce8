"""The worker server against a scripted scheduler: resources and StealRequest on the wire."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shoal.comm.connection import Connection, listen
from shoal.errors import CommError, ProtocolError
from shoal.protocol.messages import (
    ClientRegistered,
    ComputeTask,
    Message,
    RegisterWorker,
    StealRequest,
    StealResponse,
    TaskFinished,
)
from shoal.protocol.runspec import RunSpec
from shoal.protocol.serialize import dumps_run_spec
from shoal.worker.server import Worker

_release = threading.Event()


def _blocks() -> int:
    """A task that runs until the test lets it go."""
    _release.wait(10)
    return 0


class FakeScheduler:
    """Accepts one worker; the test writes to its stream and reads what it sends back."""

    def __init__(self) -> None:
        self.conn: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self.registration: RegisterWorker | None = None
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()

    async def handler(self, conn: Connection) -> None:
        reg = (await conn.read())[0]
        assert isinstance(reg, RegisterWorker)
        self.registration = reg
        await conn.write(ClientRegistered(address="inproc://fake"))
        self.conn.set_result(conn)
        try:
            while True:
                for msg in await conn.read():
                    await self.inbox.put(msg)
        except (CommError, ProtocolError):
            pass

    async def expect(self, kind: type[Message], n: int, timeout: float = 10) -> list[Message]:
        """The next ``n`` messages of type ``kind`` (others, e.g. heartbeats, skipped)."""
        out: list[Message] = []
        async with asyncio.timeout(timeout):
            while len(out) < n:
                msg = await self.inbox.get()
                if isinstance(msg, kind):
                    out.append(msg)
        return out


@asynccontextmanager
async def worker_and_scheduler(**kwargs: object) -> AsyncIterator[tuple[Worker, FakeScheduler]]:
    sched = FakeScheduler()
    listener = await listen("inproc://", sched.handler, role="scheduler")
    try:
        async with Worker(listener.contact_address, validate=True, **kwargs) as w:  # type: ignore[arg-type]
            yield w, sched
    finally:
        listener.stop()


def _task(key: str, func: object, *args: object, **kw: object) -> ComputeTask:
    return ComputeTask(
        key=key,
        run_spec=dumps_run_spec(RunSpec(func, args, {})),
        who_has={},
        nbytes={},
        priority=(0,),
        **kw,  # type: ignore[arg-type]
    )


async def test_steal_request_on_the_wire() -> None:
    _release.clear()
    async with worker_and_scheduler(nthreads=1, resources={"GPU": 1}) as (w, sched):
        assert sched.registration is not None
        assert sched.registration.resources == {"GPU": 1}
        assert w.state.total_resources == {"GPU": 1.0}
        conn = await sched.conn
        await conn.write(
            [
                _task("slow", _blocks, resources={"GPU": 1}),
                _task("queued", int, 1),
                _task("gpu", int, 2, resources={"GPU": 1}),
            ]
        )
        await conn.write(
            [StealRequest(key="queued"), StealRequest(key="gpu"), StealRequest(key="slow")]
        )
        answers = await sched.expect(StealResponse, 3)
        assert answers == [
            StealResponse(key="queued", state="ready"),
            StealResponse(key="gpu", state="constrained"),
            StealResponse(key="slow", state="executing"),
        ]
        _release.set()
        (done,) = await sched.expect(TaskFinished, 1)
        assert isinstance(done, TaskFinished) and done.key == "slow"
        await asyncio.sleep(0.05)
        assert set(w.state.tasks) == {"slow"}
        assert w.state.available_resources == {"GPU": 1.0}
