"""A client in the process of its scheduler (LocalCluster's) hands messages over as
objects on the per-task hot path, and encodes everything else as over TCP; what the
client checks and how it batches before sending."""

from __future__ import annotations

import asyncio
from typing import Any

import dask
import pytest

from shoal import Client, LocalCluster
from shoal.comm.connection import Connection, connect, listen
from shoal.comm.inproc import InProcComm
from shoal.errors import LocalProtocolError
from shoal.protocol.messages import OK, ClientReleasesKeys, KeyInMemory, UpdateGraph
from shoal.scheduler.plugins import SchedulerPlugin
from shoal.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


async def _pair() -> tuple[Connection, asyncio.Queue[Connection], Any]:
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def handler(conn: Connection) -> None:
        await accepted.put(conn)
        await asyncio.Event().wait()  # keep the connection open

    listener = await listen("inproc://", handler, role="scheduler")
    conn = await connect(listener.contact_address, role="client")
    return conn, accepted, listener


async def test_hot_path_messages_are_handed_over_and_the_rest_encoded() -> None:
    conn, accepted, listener = await _pair()
    try:
        server = await accepted.get()
        hot = KeyInMemory(key="x", type_name="int", who_has=("tcp://a:1",), value=b"\x80")
        await conn.write(hot)
        (got,) = await server.read()
        assert got is hot  # no encoding: the very object

        release = ClientReleasesKeys(keys=("x",))
        other = OK(value=("x", 1))
        await conn.write([release, UpdateGraph(tasks=(), keys=()), other])  # mixed batch
        got_batch = await server.read()
        assert got_batch == [release, UpdateGraph(tasks=(), keys=()), other]  # in order
        assert got_batch[0] is not release  # encoded, like the batch's other messages

        with pytest.raises(LocalProtocolError, match="cannot encode"):
            await conn.write(OK(value=object()))  # what TCP refuses is refused here too
    finally:
        conn.abort()
        listener.stop()


def test_a_local_cluster_client_streams_in_process(process_cluster: LocalCluster) -> None:
    with Client(process_cluster) as c:
        assert isinstance(c._conn.comm, InProcComm)  # type: ignore[union-attr]
        assert c.scheduler_address == process_cluster.scheduler_address  # tcp:// still
        assert c.scheduler_address.startswith("tcp://")
        assert c.gather(c.map(lambda x: x + 1, range(100))) == list(range(1, 101))
        with pytest.raises(ZeroDivisionError):
            c.submit(lambda: 1 / 0).result()
        big = c.submit(lambda: b"x" * 100_000)  # too large to ride along: from the worker
        assert len(big.result()) == 100_000
    with Client(process_cluster.scheduler_address) as c:  # an address: over TCP
        assert not isinstance(c._conn.comm, InProcComm)  # type: ignore[union-attr]
        assert c.submit(lambda: 3).result() == 3


@pytest.mark.parametrize("bad", [object(), ["x", 1], {"a"}, b"bytes"])
def test_invalid_keys_are_refused_before_anything_is_sent(process_client: Client, bad: Any) -> None:
    c = process_client
    with pytest.raises(TypeError, match="invalid task key"):
        c.submit(lambda: 1, key=bad)
    with pytest.raises(TypeError, match="invalid task key"):
        c.map(lambda x: x, [1, 2], key=["fine", bad])
    assert c.submit(lambda: 2, key=("ok", 1)).result() == 2
    assert c.gather(c.map(lambda x: x, [1, 2], key=["a-1", ("a", 2)])) == [1, 2]


@pytest.mark.parametrize("bad", [("a", 2**70), -(2**64), "x\ud800", ("t", ("u", 2**64))])
@pytest.mark.parametrize("over_tcp", [False, True], ids=["in-process", "tcp"])
def test_keys_no_message_can_carry_are_refused_and_the_cluster_goes_on(
    process_cluster: LocalCluster, bad: Any, over_tcp: bool
) -> None:
    """Such a key used to reach the scheduler (or break the client's stream), and the
    batched sender to the worker then failed: the task, and every later one, hung."""
    address = process_cluster.scheduler_address if over_tcp else process_cluster
    with Client(address) as c:
        match = "can't be sent to the scheduler"
        with pytest.raises(TypeError, match=match):
            c.submit(inc, 1, key=bad)
        with pytest.raises(TypeError, match=match):
            c.map(inc, [1, 2], key=["fine", bad])
        with pytest.raises(TypeError, match=match):
            c.get({bad: (inc, 1), "b": (inc, bad)}, "b")
        with pytest.raises(TypeError, match=match):
            c.scatter({bad: 1})
        assert c.get({("a", 2**63): (inc, 1), "b": (inc, ("a", 2**63))}, "b") == 3
        assert c.submit(inc, 1).result(timeout=10) == 2


@pytest.mark.parametrize(
    "option",
    [
        {"priority": 2**63 + 1},
        {"retries": 2**64},
        {"workers": ["w\ud800"]},
        {"resources": {"GPU": 2**70}},
    ],
)
def test_task_options_no_message_can_carry_are_refused(
    process_client: Client, option: dict[str, Any]
) -> None:
    c = process_client
    (name,) = option
    match = f"{name}=.* can't be sent to the scheduler"
    with pytest.raises(TypeError, match=match):
        c.submit(inc, 1, **option)
    with pytest.raises(TypeError, match=match):
        c.map(inc, [1, 2], **option)
    with pytest.raises(TypeError, match=match):
        c.compute(dask.delayed(inc)(1), **option)
    with dask.annotate(**option), pytest.raises(TypeError, match=match):
        c.compute(dask.delayed(inc)(2))
    assert c.submit(inc, 1, priority=-(2**63) + 1, retries=2**63).result(timeout=10) == 2
    anywhere = set(c.nthreads())  # workers= takes any iterable of addresses
    assert c.submit(inc, 2, workers=anywhere).result(timeout=10) == 3
    assert c.compute(dask.delayed(inc)(3), workers=anywhere).result(timeout=10) == 4


class GraphSizes(SchedulerPlugin):
    name = "graph-sizes"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def update_graph(
        self, scheduler: Any, *, client: str, keys: set[Any], tasks: list[Any]
    ) -> None:
        self.sizes.append(len(tasks))


async def test_map_sends_growing_batches_as_it_builds_them() -> None:
    async with cluster(n_workers=1, nthreads=1, validate=False) as (s, _):  # many tasks
        sizes = GraphSizes()
        await s.add_plugin(sizes)
        async with Client(s.address, asynchronous=True) as c:
            assert await c.gather(c.map(inc, range(30_000))) == list(range(1, 30_001))
            assert sizes.sizes == [1_000, 2_000, 4_000, 8_000, 10_000, 5_000]
            await c.gather(c.map(inc, range(-250, 0), batch_size=100))
            assert sizes.sizes[6:] == [100, 100, 50]


async def test_the_scheduler_takes_about_a_piece_of_a_graph_per_turn_of_its_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pieces that reach the scheduler in one batch (the client made them faster than
    it took them in) are handled one per turn, so workers get tasks meanwhile; small
    graphs (single submits) go many to a turn."""
    from shoal.scheduler import server

    turns = 0

    class Turns(SchedulerPlugin):
        name = "turns"

        def __init__(self) -> None:
            self.seen: list[int] = []

        def update_graph(self, scheduler: Any, **kwargs: Any) -> None:
            self.seen.append(turns)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def turns_seen(c: Client, plugin: Turns) -> list[int]:
        plugin.seen.clear()
        c._send(*[UpdateGraph(tasks=(), keys=()) for _ in range(3)])  # one batch
        for _ in range(200):
            if len(plugin.seen) == 3:
                break
            await asyncio.sleep(0.01)
        return plugin.seen

    async with cluster(n_workers=1, nthreads=1) as (s, _):
        plugin = Turns()
        await s.add_plugin(plugin)
        async with Client(s.address, asynchronous=True) as c:
            counter = asyncio.ensure_future(count_turns())
            try:
                first, second, third = await turns_seen(c, plugin)
                assert first == second == third  # no tasks: one turn
                monkeypatch.setattr(server, "TASKS_PER_TURN", 0)  # each a full piece
                first, second, third = await turns_seen(c, plugin)
                assert first < second < third
            finally:
                counter.cancel()


def test_an_argument_changed_after_submit_does_not_change_the_task(
    process_client: Client,
) -> None:
    np = pytest.importorskip("numpy")
    c = process_client
    x = np.zeros(100_000)
    f = c.submit(np.sum, x, pure=False)
    x += 1  # a view of x handed over to the scheduler would send the changed array
    assert f.result() == 0.0


async def test_a_map_that_raises_midway_cancels_what_it_sent() -> None:
    import threading

    async with cluster(n_workers=1, nthreads=1, validate=False) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            items: list[Any] = list(range(3_000))
            items[2_500] = threading.Lock()  # can't be pickled: after two chunks went
            with pytest.raises(Exception, match="serialize"):
                c.map(inc, items)
            for _ in range(200):
                if not s.state.tasks:
                    break
                await asyncio.sleep(0.05)
            assert not s.state.tasks
            assert await c.gather(c.map(inc, range(-5, 0))) == [-4, -3, -2, -1, 0]
