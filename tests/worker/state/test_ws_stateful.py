"""Random interleavings of scheduler messages, thread results and transfer answers.

The worker declares a resource ``R``, some tasks need part of it, the scheduler
may ask for any key back (``StealRequest``), and the memory monitor may pause and
unpause the worker (no task starts while it is paused).

A small simulated server executes the instructions: it keeps a store of keys, the
runs and transfers in flight. After every step the state machine validates itself
(``validate=True``) and the store must hold exactly the keys the machine says are in
memory (plus values scattered over a running task). At teardown every pending run and
transfer succeeds, after which nothing may be left waiting.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from ws_builders import SELF, make_ws, spec

from shoal._types import Key
from shoal.protocol.messages import AddKeys, Reschedule, StealResponse, TaskFailed, TaskFinished
from shoal.worker.state import (
    AcquireReplicasEvent,
    ComputeTaskEvent,
    DataUpdated,
    DropData,
    Event,
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    FreeKeysEvent,
    GatherDep,
    GatherDepMissing,
    GatherDepNetworkFailure,
    GatherDepSuccess,
    Instruction,
    PauseEvent,
    RescheduleTask,
    SendToScheduler,
    StealRequestEvent,
    UnpauseEvent,
)

QUEUED = ("waiting", "ready", "constrained")
KEYS: list[Key] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", ("t", 0)]
PEERS = ["tcp://a", "tcp://b", "tcp://c"]
holders = st.lists(st.sampled_from([*PEERS, SELF]), max_size=3, unique=True).map(tuple)
some_keys = st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True)


class WorkerStateMachine(RuleBasedStateMachine):
    """Drive a WorkerState like its server would, with a hostile scheduler."""

    def __init__(self) -> None:
        super().__init__()
        self.ws = make_ws()
        self.r_total = 0.0
        self.store: set[object] = set()
        #: Keys the scheduler asked us to compute and has not freed or had back.
        self.assigned: set[object] = set()
        self.running: list[Execute] = []
        #: Pending transfers, each with the keys still awaited (a scatter overtakes them).
        self.gathers: list[tuple[GatherDep, set[object]]] = []

    @initialize(
        nthreads=st.integers(1, 3),
        limit=st.sampled_from([1, 25, 10_000]),
        per_worker=st.integers(1, 2),
        total=st.integers(1, 3),
        r_total=st.sampled_from([1.0, 2.0]),
        prefetch=st.sampled_from([0, 2]),
    )
    def configure(
        self,
        nthreads: int,
        limit: int,
        per_worker: int,
        total: int,
        r_total: float,
        prefetch: int,
    ) -> None:
        self.r_total = r_total
        self.ws = make_ws(
            nthreads=nthreads,
            prefetch=prefetch,
            resources={"R": r_total},
            transfer_limit_bytes=limit,
            max_concurrent_fetches_per_worker=per_worker,
            max_concurrent_fetches=total,
        )

    def feed(self, event: Event) -> None:
        for ins in self.ws.handle(event):
            self.apply(ins)

    def apply(self, ins: Instruction) -> None:
        if isinstance(ins, Execute):
            assert not self.ws.paused, ins
            assert ins.key not in {r.key for r in self.running}, ins
            assert set(ins.dependencies) <= self.store, (ins, self.store)
            assert ins.run_spec == spec(ins.key)
            self.running.append(ins)
        elif isinstance(ins, GatherDep):
            assert ins.worker != SELF
            # Never the same key twice at once, unless a scatter overtook the first.
            in_flight = {k for _, awaited in self.gathers for k in awaited}
            assert in_flight.isdisjoint(ins.keys), ins
            self.gathers.append((ins, set(ins.keys)))
        elif isinstance(ins, DropData):
            self.store.difference_update(ins.keys)
        elif isinstance(ins, SendToScheduler):
            if isinstance(ins.msg, (TaskFinished, TaskFailed)):
                assert ins.msg.key in self.assigned, ins
            if isinstance(ins.msg, Reschedule):
                assert ins.msg.key in self.assigned, ins
                self.assigned.discard(ins.msg.key)
            if isinstance(ins.msg, StealResponse) and ins.msg.state in QUEUED:
                ts = self.ws.tasks.get(ins.msg.key)
                assert ts is None or not ts.assigned, ins
                self.assigned.discard(ins.msg.key)
            if isinstance(ins.msg, (TaskFinished, AddKeys)):
                keys = [ins.msg.key] if isinstance(ins.msg, TaskFinished) else ins.msg.keys
                for key in keys:
                    assert key in self.store, ins
                    assert self.ws.tasks[key].state == "memory", ins
        else:  # pragma: no cover
            raise AssertionError(ins)

    # ------------------------------------------------------------------ scheduler

    @rule(
        i=st.integers(0, len(KEYS) - 1),
        data=st.data(),
        priority=st.integers(0, 3),
        need=st.sampled_from([None, None, 0.5, 1.0, 2.0]),
        duration=st.sampled_from([-1.0, 0.0001, 0.0001, 5.0]),
    )
    def compute(
        self, i: int, data: st.DataObject, priority: int, need: float | None, duration: float
    ) -> None:
        key = KEYS[i]
        deps = data.draw(st.lists(st.sampled_from(KEYS[:i]), max_size=3, unique=True)) if i else []
        who_has = {d: data.draw(holders) for d in deps}
        nbytes = {d: data.draw(st.integers(1, 20)) for d in deps}
        self.assigned.add(key)
        # Never more than the worker has (else it would wait forever, by design).
        resources = {"R": need} if need is not None and need <= self.r_total else None
        self.feed(
            ComputeTaskEvent(
                key=key,
                run_spec=spec(key),
                who_has=who_has,
                nbytes=nbytes,
                priority=(priority,),
                resources=resources,
                duration=duration,
            )
        )

    @rule(keys=some_keys)
    def free(self, keys: list[object]) -> None:
        self.assigned.difference_update(keys)
        self.feed(FreeKeysEvent(keys=tuple(keys)))  # type: ignore[arg-type]

    @rule(key=st.sampled_from(KEYS))
    def steal(self, key: Key) -> None:
        self.feed(StealRequestEvent(key=key))

    @rule(keys=some_keys, data=st.data())
    def acquire(self, keys: list[object], data: st.DataObject) -> None:
        who_has = {k: data.draw(holders) for k in keys}
        self.feed(AcquireReplicasEvent(who_has=who_has, nbytes={}))  # type: ignore[arg-type]

    @rule(keys=some_keys)
    def scatter(self, keys: list[object]) -> None:
        self.store.update(keys)
        for _, awaited in self.gathers:
            awaited.difference_update(keys)
        self.feed(DataUpdated(data_nbytes=dict.fromkeys(keys, 3)))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ memory monitor

    @rule()
    def pause(self) -> None:
        self.feed(PauseEvent())

    @rule()
    def unpause(self) -> None:
        self.feed(UnpauseEvent())

    # ------------------------------------------------------------------ thread pool

    @precondition(lambda self: self.running)
    @rule(data=st.data(), outcome=st.sampled_from(["ok", "ok", "err", "reschedule"]))
    def finish_run(self, data: st.DataObject, outcome: str) -> None:
        run = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        if outcome == "ok":
            self.store.add(run.key)
            self.feed(ExecuteSuccess(key=run.key, nbytes=5, type_name="int", start=0, stop=1))
        elif outcome == "err":
            self.feed(
                ExecuteFailure(
                    key=run.key,
                    exception=None,
                    traceback=None,
                    exception_text="e",
                    traceback_text="t",
                    start=0,
                    stop=1,
                )
            )
        else:
            self.feed(RescheduleTask(key=run.key))

    # ------------------------------------------------------------------ transfers

    @precondition(lambda self: self.gathers)
    @rule(data=st.data(), outcome=st.sampled_from(["ok", "ok", "missing", "network"]))
    def answer_gather(self, data: st.DataObject, outcome: str) -> None:
        g, _ = self.gathers.pop(data.draw(st.integers(0, len(self.gathers) - 1)))
        if outcome == "network":
            self.feed(GatherDepNetworkFailure(worker=g.worker, keys=g.keys))
            return
        lacking: list[object] = []
        if outcome == "missing":
            lacking = data.draw(st.lists(st.sampled_from(g.keys), min_size=1, unique=True))
        received = {k: 4 for k in g.keys if k not in lacking}
        self.store.update(received)
        if lacking:
            self.feed(
                GatherDepMissing(worker=g.worker, keys_received=received, missing=tuple(lacking))  # type: ignore[arg-type]
            )
        else:
            self.feed(GatherDepSuccess(worker=g.worker, data_nbytes=received))

    # ------------------------------------------------------------------ checks

    @invariant()
    def store_matches_memory(self) -> None:
        scattered_while_running = {
            ts.key for ts in self.ws.executing if ts.scattered_nbytes is not None
        }
        assert self.store == self.ws.memory_keys() | scattered_while_running
        assert {r.key for r in self.running} == {ts.key for ts in self.ws.executing}
        assert len(self.gathers) == len(self.ws.fetcher.transfers)
        held = sum((ts.resources or {}).get("R", 0.0) for ts in self.ws.executing)
        assert held <= self.r_total

    def teardown(self) -> None:
        # Let everything in progress succeed: nothing may be left waiting.
        self.feed(UnpauseEvent())
        for _ in range(100):
            if self.running:
                run = self.running.pop(0)
                self.store.add(run.key)
                self.feed(ExecuteSuccess(key=run.key, nbytes=5, type_name="int", start=0, stop=1))
            elif self.gathers:
                g, _ = self.gathers.pop(0)
                self.store.update(g.keys)
                self.feed(GatherDepSuccess(worker=g.worker, data_nbytes=dict.fromkeys(g.keys, 4)))
            else:
                break
        self.store_matches_memory()
        left = {ts.key: ts.state for ts in self.ws.tasks.values()}
        assert set(left.values()) <= {"memory", "error", "missing"}, left


TestWorkerStateMachine = WorkerStateMachine.TestCase
TestWorkerStateMachine.settings = settings(
    max_examples=int(os.environ.get("SHOAL_WS_EXAMPLES", "150")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
