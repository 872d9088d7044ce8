import asyncio
from collections.abc import AsyncIterator

import pytest

from shoal.comm.batched import BatchedSender
from shoal.comm.connection import Connection, connect, listen
from shoal.errors import CommClosedError
from shoal.protocol.messages import OK, Message


class Receiver:
    def __init__(self) -> None:
        self.reads: list[list[Message]] = []
        self.conn: Connection | None = None
        self.ready = asyncio.Event()

    async def handler(self, conn: Connection) -> None:
        self.conn = conn
        self.ready.set()
        while True:
            self.reads.append(await conn.read())

    @property
    def messages(self) -> list[Message]:
        return [m for batch in self.reads for m in batch]

    async def wait_for(self, n: int) -> None:
        for _ in range(1000):
            if len(self.messages) >= n:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"received {len(self.messages)} of {n} messages")


@pytest.fixture(params=["tcp://127.0.0.1:0", "inproc://"], ids=["tcp", "inproc"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Connection, Receiver]]:
    receiver = Receiver()
    listener = await listen(request.param, receiver.handler, role="scheduler")
    conn = await connect(listener.contact_address, role="worker")
    await receiver.ready.wait()
    yield conn, receiver
    conn.abort()
    listener.stop()


async def test_many_sends_few_writes(pair: tuple[Connection, Receiver]) -> None:
    conn, receiver = pair
    sender = BatchedSender(conn)
    for i in range(1000):
        sender.send(OK(value=i))
    await sender.close()
    await receiver.wait_for(1000)
    assert receiver.messages == [OK(value=i) for i in range(1000)]
    assert sender.n_messages == 1000
    assert sender.n_writes <= 2
    assert len(receiver.reads) == sender.n_writes


async def test_order_kept_across_batches(pair: tuple[Connection, Receiver]) -> None:
    conn, receiver = pair
    sender = BatchedSender(conn, interval=0.001)
    for i in range(300):
        sender.send(OK(value=i), OK(value=-i))
        if i % 7 == 0:
            await asyncio.sleep(0)
        if i % 50 == 0:
            await asyncio.sleep(0.002)
    await receiver.wait_for(600)
    expected = [m for i in range(300) for m in (OK(value=i), OK(value=-i))]
    assert receiver.messages == expected
    assert sender.n_writes < 300
    await sender.close()


async def test_flush_on_close_and_connection_stays_open(
    pair: tuple[Connection, Receiver],
) -> None:
    conn, receiver = pair
    sender = BatchedSender(conn, interval=10)  # only the first batch goes out at once
    sender.send(OK(value="first"))
    await asyncio.sleep(0.01)
    sender.send(OK(value="second"))
    sender.send(OK(value="third"))
    await sender.close()
    assert sender.closed
    await receiver.wait_for(3)
    assert receiver.messages == [OK(value=v) for v in ("first", "second", "third")]
    assert not conn.closed()
    await conn.write(OK(value="direct"))
    await receiver.wait_for(4)
    with pytest.raises(CommClosedError):
        sender.send(OK(value="late"))
    await sender.close()  # idempotent


async def test_write_failure_closes_and_reports(pair: tuple[Connection, Receiver]) -> None:
    conn, receiver = pair
    errors: list[BaseException] = []
    sender = BatchedSender(conn, interval=0.001, on_error=errors.append)
    sender.send(OK(value=1))
    await receiver.wait_for(1)
    assert receiver.conn is not None
    receiver.conn.abort()
    for _ in range(1000):
        if sender.closed:
            break
        sender.send(OK(value=b"x" * 10_000))
        await asyncio.sleep(0.002)
    assert sender.closed
    assert len(errors) == 1
    assert isinstance(errors[0], CommClosedError)
    with pytest.raises(CommClosedError):
        sender.send(OK(value=2))
    await sender.close()


async def test_abort_drops_buffered_messages(pair: tuple[Connection, Receiver]) -> None:
    conn, receiver = pair
    sender = BatchedSender(conn, interval=10)
    sender.send(OK(value=1))
    await receiver.wait_for(1)
    sender.send(OK(value=2))
    sender.abort()
    await sender.close()
    assert sender.closed
    await asyncio.sleep(0.02)
    assert receiver.messages == [OK(value=1)]


async def test_unencodable_message_closes_the_sender(
    pair: tuple[Connection, Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    conn, _ = pair
    errors: list[BaseException] = []
    sender = BatchedSender(conn, on_error=errors.append)
    sender.send(OK(value={1, 2}))
    await sender.close()
    assert sender.closed
    assert len(errors) == 1
    assert "failed" in caplog.text
