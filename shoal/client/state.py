"""Pure bookkeeping of a client's futures: reference counts and key states.

A key is held on the cluster while at least one :class:`~shoal.client.futures.Future`
for it exists in this process. :class:`ClientRefs` counts them and says when the
scheduler must be told: the first reference to a key the client did not create
(``ClientDesiresKeys``), the last reference going away (``ClientReleasesKeys``).
"""

from __future__ import annotations

from collections import Counter

from shoal._types import Key


class ClientRefs:
    """Reference counts of keys held through futures."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[Key] = Counter()

    def acquire(self, key: Key) -> bool:
        """Count one more reference; return whether it is the first."""
        n = self.counts.get(key, 0) + 1  # (``+= 1`` would call Counter.__missing__)
        self.counts[key] = n
        return n == 1

    def release(self, key: Key) -> bool:
        """Count one reference less; return whether it was the last."""
        n = self.counts.get(key, 0)
        if n <= 1:
            self.counts.pop(key, None)
            return n == 1
        self.counts[key] = n - 1
        return False

    def __contains__(self, key: object) -> bool:
        return key in self.counts

    def __len__(self) -> int:
        return len(self.counts)
