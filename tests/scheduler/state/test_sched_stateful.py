"""Random interleavings of clients, workers and failures against SchedulerState.

A small simulated cluster plays the other side: fake workers run what ``ComputeTask``
assigns them and drop what ``FreeKeys`` names; fake clients hold futures and record
what they hear. After every step the state machine validates itself
(``validate=True``) and:

- every worker runs exactly the tasks the state says it processes, and holds exactly
  the keys the state says it holds (the messages and the state agree);
- every dependency named in a ``ComputeTask`` is held where the message says;
- no key a client wants is lost: it is in memory, processing, waiting, no-worker or
  erred, and what the client last heard matches (memory / erred);
- when every task that runs finishes, every wanted key ends in memory or erred.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sched_builders import EXC, TB, run_spec

from shoal._types import Key
from shoal.protocol.messages import (
    ComputeTask,
    FreeKeys,
    KeyErred,
    KeyInMemory,
    KeyLost,
    KeysCancelled,
    TaskSpec,
)
from shoal.scheduler.state import (
    ClientDisconnected,
    DataMissing,
    DataScattered,
    Event,
    GraphSubmitted,
    KeysDesired,
    KeysReleased,
    ReplicasAdded,
    RescheduleRequested,
    SchedulerState,
    TaskFailedEvent,
    TaskFinishedEvent,
    ToClient,
    WorkerAdded,
    WorkerRemoved,
    queries,
)
from shoal.scheduler.state import (
    KeysCancelled as CancelKeys,
)

WORKERS = [f"tcp://w{i}:1" for i in range(4)]
CLIENTS = ["c0", "c1"]
ALIVE = ("memory", "processing", "waiting", "no-worker", "erred")


class SchedulerMachine(RuleBasedStateMachine):
    """Drive a SchedulerState like its server would, with fake workers and clients."""

    def __init__(self) -> None:
        super().__init__()
        self.s = SchedulerState(validate=True, allowed_failures=1)
        self.running: dict[str, set[Key]] = {}  # per live worker
        self.held: dict[str, set[Key]] = {}
        self.wants: dict[str, set[Key]] = {c: set() for c in CLIENTS}
        self.heard: dict[str, dict[Key, str]] = {c: {} for c in CLIENTS}
        self.specs: dict[Key, TaskSpec] = {}
        self.counter = 0

    # ---------------------------------------------------------------- plumbing

    def feed(self, event: Event) -> None:
        for out in self.s.handle(event):
            msg = out.msg
            if isinstance(out, ToClient):
                self.hear(out.client, msg)
                continue
            w = out.worker
            assert w in self.running, f"message to gone worker {w}: {msg}"
            if isinstance(msg, ComputeTask):
                assert msg.key not in self.running[w], f"{msg.key!r} sent twice to {w}"
                assert set(msg.who_has) == set(self.specs[msg.key].dependencies)
                for dep, holders in msg.who_has.items():
                    assert holders, f"no holder for {dep!r}"
                    for h in holders:
                        assert dep in self.held[h], f"{h} does not hold {dep!r}"
                self.running[w].add(msg.key)
            else:
                assert isinstance(msg, FreeKeys)
                for key in msg.keys:
                    self.running[w].discard(key)
                    self.held[w].discard(key)

    def hear(self, client: str, msg: object) -> None:
        if isinstance(msg, KeysCancelled):
            for key in msg.keys:
                self.wants[client].discard(key)
                self.heard[client].pop(key, None)
            return
        assert isinstance(msg, KeyInMemory | KeyErred | KeyLost)
        assert msg.key in self.wants[client], f"{client} told about unwanted {msg.key!r}"
        kind = {KeyInMemory: "memory", KeyErred: "erred", KeyLost: "lost"}[type(msg)]
        self.heard[client][msg.key] = kind

    def new_key(self) -> str:
        self.counter += 1
        return f"k{self.counter}"

    def live(self) -> list[str]:
        return sorted(self.running)

    def assignments(self) -> list[tuple[str, Key]]:
        return sorted((w, k) for w, keys in self.running.items() for k in keys)

    # ---------------------------------------------------------------- workers

    @precondition(lambda self: len(self.running) < len(WORKERS))
    @rule(data=st.data(), nthreads=st.integers(1, 2))
    def add_worker(self, data: st.DataObject, nthreads: int) -> None:
        address = data.draw(st.sampled_from([w for w in WORKERS if w not in self.running]))
        self.running[address] = set()
        self.held[address] = set()
        self.feed(WorkerAdded(address, nthreads, 2**30, address))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), safe=st.booleans())
    def remove_worker(self, data: st.DataObject, safe: bool) -> None:
        address = data.draw(st.sampled_from(self.live()))
        del self.running[address], self.held[address]
        self.feed(WorkerRemoved(address, "test", safe=safe))

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data(), nbytes=st.integers(0, 100))
    def finish(self, data: st.DataObject, nbytes: int) -> None:
        w, key = data.draw(st.sampled_from(self.assignments()))
        self.finish_on(w, key, nbytes)

    def finish_on(self, w: str, key: Key, nbytes: int = 10) -> None:
        self.running[w].discard(key)
        self.held[w].add(key)
        self.feed(TaskFinishedEvent(w, key, nbytes, "int", 0.0, 1.0))

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        w, key = data.draw(st.sampled_from(self.assignments()))
        self.running[w].discard(key)
        self.feed(TaskFailedEvent(w, key, EXC, TB, "ValueError: no", "tb", 0.0, 1.0))

    @precondition(lambda self: self.running and self.specs)
    @rule(data=st.data())
    def stale_finish(self, data: st.DataObject) -> None:
        """A worker reports a task it was not (or no longer) asked to run."""
        w = data.draw(st.sampled_from(self.live()))
        self.finish_on(w, data.draw(st.sampled_from(sorted(self.specs))))

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data())
    def reschedule(self, data: st.DataObject) -> None:
        w, key = data.draw(st.sampled_from(self.assignments()))
        self.running[w].discard(key)
        self.feed(RescheduleRequested(w, key))

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def data_missing(self, data: st.DataObject) -> None:
        """A worker loses a key (or never had it) and a peer reports it."""
        pairs = sorted((w, k) for w, keys in self.held.items() for k in keys)
        errant, key = data.draw(st.sampled_from(pairs))
        self.held[errant].discard(key)
        self.feed(DataMissing(self.live()[0], key, errant))

    @precondition(lambda self: len(self.running) > 1 and any(self.held.values()))
    @rule(data=st.data())
    def replicate(self, data: st.DataObject) -> None:
        pairs = sorted((w, k) for w, keys in self.held.items() for k in keys)
        _, key = data.draw(st.sampled_from(pairs))
        w = data.draw(st.sampled_from(self.live()))
        self.held[w].add(key)
        self.feed(ReplicasAdded(w, (key,), {key: 10}))

    # ---------------------------------------------------------------- clients

    def ask(self, client: str, keys: list[Key]) -> None:
        """The client holds (new) futures for ``keys``: it forgets what it heard."""
        for key in keys:
            self.wants[client].add(key)
            self.heard[client].pop(key, None)

    @rule(
        data=st.data(),
        client=st.sampled_from(CLIENTS),
        n=st.integers(1, 4),
        retries=st.integers(0, 1),
    )
    def submit(self, data: st.DataObject, client: str, n: int, retries: int) -> None:
        known = sorted(self.specs)
        specs: list[TaskSpec] = []
        for _ in range(n):
            choices = [sp.key for sp in specs] + known
            deps = (
                data.draw(st.lists(st.sampled_from(choices), max_size=3, unique=True))
                if choices
                else []
            )
            key = self.new_key()
            specs.append(TaskSpec(key, tuple(deps), run_spec(key), (self.counter,), retries))
            self.specs[key] = specs[-1]
        if known and data.draw(st.booleans()):
            # Resubmit an old key with its whole lineage (like a client recomputing it).
            old = data.draw(st.sampled_from(known))
            todo, seen = [old], set()
            while todo:
                k = todo.pop()
                if k not in seen:
                    seen.add(k)
                    todo.extend(self.specs[k].dependencies)
            specs = [self.specs[k] for k in sorted(seen, key=lambda k: int(k[1:]))] + specs
        keys = data.draw(
            st.lists(st.sampled_from([sp.key for sp in specs]), min_size=1, unique=True)
        )
        self.ask(client, keys)
        self.feed(GraphSubmitted(client, tuple(specs), tuple(keys)))

    @precondition(lambda self: any(self.wants.values()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from([c for c in CLIENTS if self.wants[c]]))
        key = data.draw(st.sampled_from(sorted(self.wants[client])))
        self.wants[client].discard(key)
        self.heard[client].pop(key, None)
        self.feed(KeysReleased(client, (key,)))

    @precondition(lambda self: self.specs)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS), force=st.booleans())
    def cancel(self, data: st.DataObject, client: str, force: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.specs)))
        self.feed(CancelKeys(client, (key,), force=force))

    @precondition(lambda self: self.specs)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def desire(self, data: st.DataObject, client: str) -> None:
        key = data.draw(st.sampled_from(sorted(self.specs)))
        self.ask(client, [key])
        self.feed(KeysDesired(client, (key,)))

    @rule(client=st.sampled_from(CLIENTS))
    def disconnect(self, client: str) -> None:
        self.wants[client].clear()
        self.heard[client].clear()
        self.feed(ClientDisconnected(client))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def scatter(self, data: st.DataObject, client: str) -> None:
        holders = data.draw(st.lists(st.sampled_from(self.live()), min_size=1, unique=True))
        key = self.new_key()
        self.specs[key] = TaskSpec(key, (), None)
        for w in holders:
            self.held[w].add(key)
        self.ask(client, [key])
        self.feed(DataScattered(client, {key: tuple(holders)}, {key: 5}))

    @precondition(lambda self: self.running)
    @rule()
    def drain(self) -> None:
        """Let every task run to completion: every wanted key ends in memory or erred."""
        while self.assignments():
            self.finish_on(*self.assignments()[0])
        for client, keys in self.wants.items():
            for key in keys:
                state = self.s.tasks[key].state
                assert state in ("memory", "erred"), f"{client} wants {key!r}, {state} after drain"

    # ---------------------------------------------------------------- invariants

    @invariant()
    def workers_agree_with_state(self) -> None:
        assert {w: set(ks) for w, ks in queries.processing(self.s).items()} == self.running
        assert {w: set(ks) for w, ks in queries.has_what(self.s).items()} == self.held

    @invariant()
    def wanted_keys_are_never_lost(self) -> None:
        for client in CLIENTS:
            cs = self.s.clients.get(client)
            wanted = {ts.key for ts in cs.wants_what} if cs else set()
            assert wanted == self.wants[client]
            for key in wanted:
                state = self.s.tasks[key].state
                assert state in ALIVE, f"{client} wants {key!r} in {state}"
                heard = self.heard[client].get(key)
                if state in ("memory", "erred"):
                    assert heard == state, f"{client} heard {heard} for {state} {key!r}"
                else:
                    assert heard in (None, "lost"), f"{client} heard {heard} for {state} {key!r}"


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
