"""Moving data and workers on purpose (Client methods): retire, replicate, rebalance."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shoal.client.futures import futures_in
from shoal.protocol.messages import Message, Rebalance, Replicate, Restart, RetireWorkers


def _names(workers: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if workers is None:
        return None
    if isinstance(workers, str):
        return (workers,)
    return tuple(workers)


class ClusterControl:
    """The part of :class:`~shoal.Client` that moves data and retires workers."""

    _sync: Callable[..., Any]
    _request: Callable[[Message], Any]

    def retire_workers(
        self,
        workers: Iterable[str] | str | None = None,
        close_workers: bool = True,
        n: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Retire workers gracefully and return ``{address: info}`` of those retired.

        ``workers`` are addresses or names; without them, ``n`` workers holding the
        least data are chosen. Each leaving worker first hands the tasks it has not
        started to the others and copies the keys only it holds to them; nothing is
        lost or recomputed. Then it shuts down (unless ``close_workers=False``, which
        only removes it from the scheduler). When no other worker would remain, only
        workers that run nothing and hold no data alone are retired.
        """
        msg = RetireWorkers(workers=_names(workers), n=n, close_workers=close_workers)
        return self._sync(self._request, msg)

    def replicate(
        self,
        futures: Any,
        n: int | None = None,
        workers: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Make each future's value held by ``n`` workers (all of ``workers`` if None).

        Copies are added on the workers holding the least data, or extra copies dropped,
        among ``workers`` (default: every worker). Returns once the copies exist.
        """
        if n is not None and n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        keys = tuple(f.key for f in futures_in(futures))
        return self._sync(self._replicate, Replicate(keys=keys, n=n, workers=_names(workers)))

    async def _replicate(self, msg: Replicate) -> None:
        await self._request(msg)

    def rebalance(
        self, futures: Any = None, workers: Iterable[str] | None = None, **kwargs: Any
    ) -> Any:
        """Even out the bytes held by ``workers`` (all if None), moving the values of
        ``futures`` (any key if None) from workers above the mean to workers below it.
        Returns once the moves are done."""
        keys = None if futures is None else tuple(f.key for f in futures_in(futures))
        return self._sync(self._rebalance, Rebalance(keys=keys, workers=_names(workers)))

    async def _rebalance(self, msg: Rebalance) -> None:
        await self._request(msg)

    def restart(self, timeout: float = 120.0, wait_for_workers: bool = True) -> Any:
        """Restart every worker and forget every task.

        Each worker process is replaced through its nanny (workers without one are
        closed, for whatever started them to start again); the futures of every client
        are cancelled. With ``wait_for_workers`` (the default) this returns once as many
        workers as before are back, and raises ``RemoteError`` after ``timeout`` seconds.
        """
        return self._sync(
            self._restart, Restart(timeout=timeout, wait_for_workers=wait_for_workers)
        )

    async def _restart(self, msg: Restart) -> None:
        await self._request(msg)
