"""Moving data: gathering results from workers, scattering local data to them."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dask.base import tokenize

from shoal._types import Key
from shoal.client.futures import Future, FutureState, _wait_all, futures_in
from shoal.client.keys import check_keys
from shoal.comm import get_data
from shoal.comm.rpc import ConnectionPool
from shoal.errors import CommError, FutureCancelledError
from shoal.protocol.messages import (
    OK,
    GatherKeys,
    NThreads,
    ScatteredData,
    UpdateData,
    unknown_key_reason,
)
from shoal.protocol.opaque import Opaque
from shoal.protocol.runspec import KEEP, replace_objects
from shoal.protocol.serialize import dumps, loads


class DataMixin:
    """The part of :class:`~shoal.Client` that moves values to and from workers."""

    _sync: Callable[..., Any]
    _request: Callable[..., Any]
    _flush_outbox: Callable[[], None]
    _lock: threading.RLock
    _states: dict[Key, FutureState]
    _pool: ConnectionPool | None
    scheduler_address: str | None
    id: str

    def gather(
        self,
        futures: Any,
        errors: str = "raise",
        direct: bool | None = None,
        asynchronous: bool | None = None,
    ) -> Any:
        """Wait for futures and return their values, in the same structure as given.

        ``errors="raise"`` re-raises the first failure; ``"skip"`` leaves failed and
        cancelled futures out of the result.
        """
        return self._sync(self._gather, futures, errors)

    async def _gather(self, obj: Any, errors: str = "raise") -> Any:
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        futures = futures_in(obj)
        await _wait_all(futures, None, None)
        bad = set()
        for f in futures:
            if f.status in ("error", "cancelled"):
                if errors == "raise":
                    await f._result()
                bad.add(f.key)
        values = await self._gather_keys([f.key for f in futures if f.key not in bad])

        def fill(x: Any) -> Any:
            if isinstance(x, Future):
                return values.get(x.key, _SKIP)
            return KEEP

        result = replace_objects(obj, fill)
        return _drop_skipped(result) if bad else result

    async def _gather_keys(self, keys: Sequence[Key]) -> dict[Key, Any]:
        """Fetch the values of finished keys straight from the workers holding them.

        First from the holders the scheduler named when the keys finished; for keys
        that moved or were lost since, ask the scheduler where they are now.
        """
        assert self._pool is not None and self.scheduler_address is not None
        values: dict[Key, Any] = {}
        by_worker: dict[str, list[Key]] = defaultdict(list)
        todo: list[Key] = []
        for key in dict.fromkeys(keys):
            st = self._states.get(key)
            if st is not None and st.value is not None:
                values[key] = self._load_value(Opaque([st.value]))  # came with the completion
            elif st is not None and st.who_has:
                by_worker[random.choice(st.who_has)].append(key)
            else:
                todo.append(key)
        if by_worker:
            todo += await self._fetch_from(by_worker, values)
        for attempt in range(20):
            if not todo:
                return values
            info = await self._request(GatherKeys(keys=tuple(todo)))
            by_worker = defaultdict(list)
            waiting = []
            for key in todo:
                entry = info.get(key) or {}
                holders = list(entry.get("who_has") or ())
                status = entry.get("status")
                st = self._states.get(key)
                if holders:
                    by_worker[random.choice(holders)].append(key)
                elif st is not None and st.status == "error":
                    raise st.error.load()  # type: ignore[union-attr]
                elif status in (None, "forgotten"):
                    raise FutureCancelledError(key, unknown_key_reason(key))
                else:
                    waiting.append(key)
            todo = await self._fetch_from(by_worker, values) + waiting
            if todo:
                await asyncio.sleep(min(0.02 * 2**attempt, 1.0))
                for key in todo:
                    st = self._states.get(key)
                    if st is not None:
                        await st.wait()
                        if st.status == "error":
                            raise st.error.load()  # type: ignore[union-attr]
        raise RuntimeError(f"could not gather {todo!r}: the workers holding them keep failing")

    async def _fetch_from(
        self, by_worker: dict[str, list[Key]], values: dict[Key, Any]
    ) -> list[Key]:
        """Get keys from the given workers into ``values``; return the keys not got."""

        async def one(addr: str, ks: list[Key]) -> tuple[Key, ...]:
            try:
                opaques, missing = await get_data.request_data(self._pool, addr, ks)  # type: ignore[arg-type]
            except CommError:
                return tuple(ks)
            for k, opaque in opaques.items():
                values[k] = self._load_value(opaque)
            return missing

        missed = await asyncio.gather(*(one(a, ks) for a, ks in by_worker.items()))
        return [k for ks in missed for k in ks]

    def _load_value(self, opaque: Opaque) -> Any:
        """A task's value, from its serialized form."""
        return loads(opaque)

    # ------------------------------------------------------------------ scatter

    def scatter(
        self,
        data: Any,
        workers: str | Iterable[str] | None = None,
        broadcast: bool = False,
        direct: bool | None = None,
        hash: bool = True,
        timeout: float | None = None,
        asynchronous: bool | None = None,
    ) -> Any:
        """Put local data on workers; return Futures in the same structure as ``data``."""
        return self._sync(self._scatter, data, workers, broadcast, hash)

    async def _scatter(
        self, data: Any, workers: str | Iterable[str] | None, broadcast: bool, hash: bool
    ) -> Any:
        if isinstance(data, dict):
            items = list(data.items())
            check_keys(list(data))
        else:
            seq = [data] if not isinstance(data, (list, tuple, set, frozenset)) else list(data)
            items = [
                (f"{type(x).__name__}-{tokenize(x) if hash else uuid.uuid4().hex}", x) for x in seq
            ]
        if isinstance(workers, str):
            workers = [workers]
        nthreads: dict[str, int] = await self._request(
            NThreads(workers=tuple(workers) if workers is not None else None)
        )
        targets = sorted(nthreads)
        while not targets:
            await asyncio.sleep(0.05)
            targets = sorted(await self._request(NThreads(workers=None)))
        assignment: dict[str, dict[Key, Any]] = defaultdict(dict)
        who_has: dict[Key, list[str]] = defaultdict(list)
        start = random.randrange(len(targets))
        for i, (key, value) in enumerate(items):
            opaque = dumps(value)
            chosen = targets if broadcast else [targets[(start + i) % len(targets)]]
            for w in chosen:
                assignment[w][key] = opaque
                who_has[key].append(w)
        assert self._pool is not None
        replies = await asyncio.gather(
            *(self._pool.request(w, UpdateData(data=d)) for w, d in assignment.items())
        )
        nbytes: dict[Key, int] = {}
        for reply in replies:
            if isinstance(reply, OK) and isinstance(reply.value, dict):
                nbytes.update(reply.value)
        futures = {}
        for key, _ in items:
            with self._lock:
                fut = Future(key, self, inform=False)  # type: ignore[arg-type]
            fut._state.finish(None, tuple(who_has[key]))
            futures[key] = fut
        self._flush_outbox()
        await self._request(
            ScatteredData(
                who_has={k: tuple(v) for k, v in who_has.items()}, nbytes=nbytes, client=self.id
            )
        )
        if isinstance(data, dict):
            return {k: futures[k] for k, _ in items}
        out = [futures[k] for k, _ in items]
        if isinstance(data, (list, tuple, set, frozenset)):
            return type(data)(out) if not isinstance(data, (set, frozenset)) else out
        return out[0]


class _Skip:
    """Marks a failed future's place in a gathered structure (``errors="skip"``)."""


_SKIP = _Skip()


def _drop_skipped(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_drop_skipped(x) for x in obj if x is not _SKIP]
    if isinstance(obj, tuple):
        return tuple(_drop_skipped(x) for x in obj if x is not _SKIP)
    if isinstance(obj, dict):
        return {k: _drop_skipped(v) for k, v in obj.items() if v is not _SKIP}
    if isinstance(obj, set):
        return {x for x in obj if x is not _SKIP}
    return obj
