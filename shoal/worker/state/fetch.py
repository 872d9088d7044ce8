"""Which dependencies to fetch, from whom, and how many transfers at once.

Rationale. A key in ``fetch`` sits in one queue per peer that holds it
(``data_needed[peer]``, ordered by priority), so that when a peer becomes free we can
take its most urgent keys without scanning every task. A key leaves every queue as
soon as one transfer takes it: the same key is never in flight twice.

Choosing transfers (:meth:`Fetcher.plan`) walks the peers that have pending keys and a
free transfer slot, most urgent first: ordered by the priority of their best pending
key, then by the number of transfers already in flight from them (fewest first, so
load spreads across the holders of replicated keys), then by address (determinism).
From the chosen peer it takes keys in priority order up to ``transfer_limit_bytes``
(always at least one key), then repeats while ``max_concurrent_fetches`` allows.
distributed's ``_select_workers_for_gather`` does the same, with locality and a seeded
random tie-breaker in place of the in-flight count.

Cost: ``enqueue``/``dequeue`` are O(holders · log n) per task; ``plan`` is
O(P log P) in the number ``P`` of peers with pending keys, plus O(log n) per key taken.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from shoal._types import Address, Key
from shoal.worker.state.model import TaskHeap, TaskState, Transfer


class Fetcher:
    """Pending fetches per peer, who holds what, and the transfers in flight."""

    def __init__(
        self,
        *,
        transfer_limit_bytes: int,
        max_concurrent_fetches_per_worker: int,
        max_concurrent_fetches: int,
    ) -> None:
        self.transfer_limit_bytes = transfer_limit_bytes
        self.max_concurrent_fetches_per_worker = max_concurrent_fetches_per_worker
        self.max_concurrent_fetches = max_concurrent_fetches
        #: Keys in ``fetch`` per peer that holds them, most urgent first.
        self.data_needed: dict[Address, TaskHeap] = {}
        #: Reverse of ``TaskState.who_has``: the tasks each peer is believed to hold.
        self.has_what: dict[Address, set[TaskState]] = {}
        #: Transfers in flight by id, and their ids per peer (in the order started).
        self.transfers: dict[int, Transfer] = {}
        self.transfers_by_worker: dict[Address, list[int]] = {}
        #: Bytes expected from all transfers in flight.
        self.in_flight_bytes = 0
        self._next_transfer_id = 0
        self._seq = 0

    # ------------------------------------------------------------------ holders

    def add_holder(self, ts: TaskState, worker: Address) -> None:
        """Record that ``worker`` holds ``ts`` (queue it there if it is in ``fetch``)."""
        if worker in ts.who_has:
            return
        ts.who_has.add(worker)
        self.has_what.setdefault(worker, set()).add(ts)
        if ts.state == "fetch":
            self._seq += 1
            self.data_needed.setdefault(worker, TaskHeap()).add(ts, self._seq)

    def remove_holder(self, ts: TaskState, worker: Address) -> None:
        """Record that ``worker`` does not hold ``ts`` (any more)."""
        if worker not in ts.who_has:
            return
        ts.who_has.discard(worker)
        tasks = self.has_what[worker]
        tasks.discard(ts)
        if not tasks:
            del self.has_what[worker]
        self._discard(worker, ts)

    def forget_peer(self, worker: Address) -> list[TaskState]:
        """Drop ``worker`` from every ``who_has``; return the tasks it was said to hold."""
        tasks = sorted(self.has_what.pop(worker, ()), key=lambda ts: ts.id)
        for ts in tasks:
            ts.who_has.discard(worker)
        self.data_needed.pop(worker, None)
        return tasks

    def forget(self, ts: TaskState) -> None:
        """Remove every trace of ``ts`` (it is being forgotten)."""
        for worker in list(ts.who_has):
            self.remove_holder(ts, worker)

    # ------------------------------------------------------------------ queues

    def enqueue(self, ts: TaskState) -> None:
        """Queue ``ts`` at each of its holders (it enters ``fetch``)."""
        self._seq += 1
        for worker in ts.who_has:
            self.data_needed.setdefault(worker, TaskHeap()).add(ts, self._seq)

    def dequeue(self, ts: TaskState) -> None:
        """Remove ``ts`` from every queue (it leaves ``fetch``)."""
        for worker in ts.who_has:
            self._discard(worker, ts)

    def reprioritize(self, ts: TaskState, priority: tuple[int | float, ...]) -> None:
        """Give ``ts`` a new priority, moving it in its queues if it is in ``fetch``."""
        queued = ts.state == "fetch"
        if queued:
            self.dequeue(ts)
        ts.priority = priority
        if queued:
            self.enqueue(ts)

    def _discard(self, worker: Address, ts: TaskState) -> None:
        heap = self.data_needed.get(worker)
        if heap is not None:
            heap.discard(ts)
            if not heap:
                del self.data_needed[worker]

    # ------------------------------------------------------------------ transfers

    def in_flight_count(self, worker: Address) -> int:
        """Number of transfers in flight from ``worker``."""
        return len(self.transfers_by_worker.get(worker, ()))

    def plan(self) -> list[tuple[Address, list[TaskState]]]:
        """Choose the transfers to start now (see the module docstring).

        The chosen keys are removed from every queue; the caller opens a transfer for
        each batch (:meth:`open_transfer`) and moves the keys to ``flight``.
        """
        free = self.max_concurrent_fetches - len(self.transfers)
        if free <= 0 or not self.data_needed:
            return []
        per_worker = self.max_concurrent_fetches_per_worker
        candidates: list[tuple[tuple[int | float, ...], int, Address]] = []
        for worker, queue in self.data_needed.items():
            n = self.in_flight_count(worker)
            if n < per_worker:
                candidates.append((queue.peek().priority, n, worker))
        heapq.heapify(candidates)
        batches: list[tuple[Address, list[TaskState]]] = []
        touched: list[Address] = []
        while candidates and len(batches) < free:
            priority, n, worker = heapq.heappop(candidates)
            heap = self.data_needed.get(worker)
            if not heap:
                continue
            top = heap.peek().priority
            if top != priority:
                # Another peer took this one's best key: queue it again by its new best.
                heapq.heappush(candidates, (top, n, worker))
                continue
            batch: list[TaskState] = []
            total = 0
            while heap:
                ts = heap.peek()
                size = ts.fetch_nbytes
                if batch and total + size > self.transfer_limit_bytes:
                    break
                heap.pop()
                batch.append(ts)
                total += size
                for other in ts.who_has:
                    if other != worker:
                        other_heap = self.data_needed.get(other)
                        if other_heap is not None:
                            other_heap.discard(ts)
                            touched.append(other)
            batches.append((worker, batch))
            touched.append(worker)
            if heap and n + 1 < per_worker:
                heapq.heappush(candidates, (heap.peek().priority, n + 1, worker))
        for worker in touched:
            heap = self.data_needed.get(worker)
            if heap is not None and not heap:
                del self.data_needed[worker]
        return batches

    def open_transfer(self, worker: Address, tasks: list[TaskState]) -> Transfer:
        """Record a transfer of ``tasks`` from ``worker``; set their ``transfer_id``."""
        self._next_transfer_id += 1
        transfer = Transfer(
            id=self._next_transfer_id,
            worker=worker,
            keys=tuple(ts.key for ts in tasks),
            nbytes=sum(ts.fetch_nbytes for ts in tasks),
        )
        self.transfers[transfer.id] = transfer
        self.transfers_by_worker.setdefault(worker, []).append(transfer.id)
        self.in_flight_bytes += transfer.nbytes
        for ts in tasks:
            ts.transfer_id = transfer.id
        return transfer

    def close_transfer(self, worker: Address, keys: Iterable[Key]) -> Transfer | None:
        """Find and remove the transfer from ``worker`` that ``keys`` answer.

        Returns ``None`` if no transfer from ``worker`` asked for any of ``keys`` (a
        stale or duplicate answer). An answer naming no key at all closes the only
        transfer from ``worker``, if there is exactly one.
        """
        ids = self.transfers_by_worker.get(worker)
        if not ids:
            return None
        wanted = set(keys)
        found = None
        for tid in ids:
            if (not wanted and len(ids) == 1) or not wanted.isdisjoint(self.transfers[tid].keys):
                found = tid
                break
        if found is None:
            return None
        ids.remove(found)
        if not ids:
            del self.transfers_by_worker[worker]
        transfer = self.transfers.pop(found)
        self.in_flight_bytes -= transfer.nbytes
        return transfer
