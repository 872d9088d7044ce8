"""Type aliases shared by every layer. No logic lives here."""

from __future__ import annotations

from typing import TypeAlias

#: A task key: dask keys are str, int, float, bytes, or (nested) tuples of those.
Key: TypeAlias = "str | int | float | bytes | tuple[Key, ...]"
#: A transport URL such as ``tcp://127.0.0.1:8786`` or ``inproc://1234/5``.
Address: TypeAlias = str
#: Identifies one client connection on the scheduler.
ClientId: TypeAlias = str
#: Identifies the cause of a chain of transitions (for stories and logs).
StimulusId: TypeAlias = str
