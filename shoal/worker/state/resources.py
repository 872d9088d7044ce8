"""Abstract resources a worker declares (``{"GPU": 2, "MEM": 10e9}``) and who holds them.

Rationale. A task submitted with ``resources={"GPU": 1}`` may run only while that much
of every resource it names is free on its worker. The scheduler places such a task on
a worker that declares at least that much in total; the worker then decides *when* it
runs: the task waits in ``constrained`` (a priority queue of its own, so that it never
holds back tasks without restrictions) until enough is available, holds its amounts
while ``executing`` and gives them back when it leaves ``executing``, whatever the
outcome. This is distributed's design (``constrained``, ``available_resources``).

Amounts are floats, so adding and subtracting them may leave rounding residue
(``1.0 - 0.1 * 10`` is not ``0.0``): :meth:`ResourcePool.fits` allows for a residue
of one part in 10⁹ of the declared total, and every amount is reset to its total
exactly once no running task holds any of it.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Relative slack allowed for float rounding when comparing amounts.
RELATIVE_TOLERANCE = 1e-9


def normalize(resources: Mapping[str, float] | None) -> dict[str, float] | None:
    """The amounts a task needs: positive ones only, as floats; ``None`` if none."""
    if not resources:
        return None
    needs = {name: float(amount) for name, amount in resources.items() if amount > 0}
    return needs or None


class ResourcePool:
    """The resources declared by a worker (``total``) and those free now (``available``).

    Only tasks in ``executing`` hold resources: ``available[name]`` is
    ``total[name]`` minus what the running tasks hold of ``name``.
    """

    __slots__ = ("_holders", "available", "total")

    def __init__(self, total: Mapping[str, float] | None = None) -> None:
        self.total: dict[str, float] = {name: float(n) for name, n in (total or {}).items()}
        self.available: dict[str, float] = dict(self.total)
        #: Number of running tasks holding some of each resource.
        self._holders: dict[str, int] = dict.fromkeys(self.total, 0)

    def __repr__(self) -> str:
        return f"<ResourcePool available={self.available} total={self.total}>"

    def fits(self, needs: Mapping[str, float]) -> bool:
        """Whether every amount in ``needs`` is available now.

        A resource this worker does not declare is never available (the scheduler is
        responsible for not sending such a task here).
        """
        for name, amount in needs.items():
            have = self.available.get(name)
            if have is None or have + RELATIVE_TOLERANCE * self.total[name] < amount:
                return False
        return True

    def acquire(self, needs: Mapping[str, float]) -> None:
        """A task starts running and holds ``needs`` (which must fit)."""
        for name, amount in needs.items():
            self.available[name] -= amount
            self._holders[name] += 1

    def release(self, needs: Mapping[str, float]) -> None:
        """A task that held ``needs`` stopped running: give them back."""
        for name, amount in needs.items():
            self._holders[name] -= 1
            if self._holders[name]:
                self.available[name] += amount
            else:
                self.available[name] = self.total[name]  # no rounding residue survives

    def close_to(self, name: str, amount: float) -> bool:
        """Whether ``available[name]`` equals ``amount`` up to rounding (for validation)."""
        slack = RELATIVE_TOLERANCE * max(1.0, abs(self.total[name]))
        return abs(self.available[name] - amount) <= slack

    def holders(self, name: str) -> int:
        """Number of running tasks holding some of ``name`` (for validation)."""
        return self._holders[name]
