"""Where the running task is: set by the worker's executor, read by ``get_client``.

Lives at the bottom layer so that the client can find the current worker without
importing the worker package (the two are independent of each other).
"""

from __future__ import annotations

import threading
from typing import Any

#: Attributes set on task threads: ``worker`` (the Worker object) and ``key``.
task_context = threading.local()


def current_worker() -> Any | None:
    """The worker running the task on this thread, or ``None`` outside tasks."""
    return getattr(task_context, "worker", None)
