"""``shoal.progress``: progress bars of futures and persisted collections.

Bars are drawn by tqdm: in a terminal (or any stream, ``file=``), and as widgets in a
notebook (``tqdm.notebook``, where ipywidgets is installed). As distributed's
``progress``:

- in a terminal with a synchronous client it blocks until every future is done;
- in a notebook, or with an asynchronous client, it returns at once and the bars
  update in the background (a thread, or a task on the client's event loop); the
  returned :class:`ProgressBar` can be waited on (``bar.wait()``, ``await bar``);
- ``multi=True`` draws one bar per key prefix (``inc``, ``add``...), else one bar;
- ``complete=False`` counts only what was not done yet when it started;
- it stops at the first error (that bar turns red and says how many erred), so it never
  hangs on a failed computation; a cancelled future counts as done, and is reported.

The bars follow the futures this client holds (the keys of a persisted collection,
what ``futures_of`` returns), not the intermediate tasks of their graphs.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from dask.utils import key_split

from shoal.client.futures import Future, futures_in
from shoal.config import parse_seconds

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["ProgressBar", "progress"]

#: tqdm's default line without the rate: ``inc 100%|██████████| 10/10 [00:01, 1 erred]``
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class _Group:
    """The futures of one bar and what became of them."""

    __slots__ = ("bar", "cancelled", "done", "erred", "name", "pending", "total")

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.done = 0
        self.erred = 0
        self.cancelled = 0
        self.pending: list[Future] = []
        self.bar: Any = None

    def poll(self) -> None:
        """Count the futures that finished since the last poll."""
        still: list[Future] = []
        for f in self.pending:
            status = f.status
            if status == "finished":
                self.done += 1
            elif status == "error":
                self.erred += 1
            elif status == "cancelled":
                self.cancelled += 1
            else:
                still.append(f)
        self.pending = still

    @property
    def finished(self) -> int:
        return self.done + self.erred + self.cancelled


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _tqdm_class(notebook: bool) -> Any:
    if notebook:
        try:
            import ipywidgets  # noqa: F401  (tqdm.notebook needs it to draw)
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm
        except ImportError:
            pass  # no widgets: text bars still work in a notebook's output
    from tqdm import tqdm

    return tqdm


class ProgressBar:
    """The bars of one ``progress`` call, and the loop that updates them."""

    def __init__(
        self,
        futures: list[Future],
        *,
        multi: bool = True,
        complete: bool = True,
        notebook: bool = False,
        interval: float = 0.1,
        **tqdm_kwargs: Any,
    ) -> None:
        self.futures = futures
        self.interval = interval
        self.notebook = notebook
        self.groups: dict[str, _Group] = {}
        for f in futures:
            name = key_split(f.key) if multi else ""
            group = self.groups.get(name)
            if group is None:
                group = self.groups[name] = _Group(name)
            if complete or not f.done():
                group.total += 1
                group.pending.append(f)
        #: "running" until every future is done ("finished"), one erred ("error") or
        #: the bars were closed early ("closed")
        self.status = "running"
        self._finished = threading.Event()
        self._async_done: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._tqdm_kwargs = tqdm_kwargs

    # ------------------------------------------------------------------ drawing

    def _open(self) -> None:
        cls = _tqdm_class(self.notebook)
        width = max((len(g.name) for g in self.groups.values()), default=0)
        for i, group in enumerate(self.groups.values()):
            kwargs = {
                "position": i,
                "leave": True,
                "mininterval": 0,
                "bar_format": BAR_FORMAT,
                **self._tqdm_kwargs,
            }
            group.bar = cls(total=group.total, desc=group.name.ljust(width), **kwargs)

    def _draw(self) -> None:
        for group in self.groups.values():
            bar = group.bar
            if bar is None:
                continue
            bar.n = group.done  # erred and cancelled futures are noted, not counted
            notes = []
            if group.erred:
                notes.append(f"{group.erred} erred")
                bar.colour = "red"
            if group.cancelled:
                notes.append(f"{group.cancelled} cancelled")
            if notes:
                bar.set_postfix_str(", ".join(notes), refresh=False)
            bar.refresh()

    def _close(self) -> None:
        for group in self.groups.values():
            if group.bar is not None:
                group.bar.close()
                group.bar = None

    def step(self) -> bool:
        """Poll the futures and redraw; return whether the bars are final."""
        for group in self.groups.values():
            group.poll()
        self._draw()
        if any(g.erred for g in self.groups.values()):
            self.status = "error"
        elif all(not g.pending for g in self.groups.values()):
            self.status = "finished"
        return self.status != "running"

    def _end(self) -> None:
        self._close()
        self._finished.set()
        if self._async_done is not None:
            self._async_done.set()

    # ------------------------------------------------------------------ drivers

    def run(self) -> None:
        """Update the bars on this thread until they are final (blocking)."""
        self._open()
        try:
            while not self.step():
                time.sleep(self.interval)
        finally:
            if self.status == "running":
                self.status = "closed"
            self._end()

    def start_thread(self) -> None:
        """Update the bars from a background thread."""
        threading.Thread(target=self.run, name="shoal-progress", daemon=True).start()

    def start_task(self, loop: asyncio.AbstractEventLoop) -> None:
        """Update the bars from a task on ``loop`` (an asynchronous client's)."""

        async def updating() -> None:
            self._open()
            try:
                while not self.step():
                    await asyncio.sleep(self.interval)
            finally:
                if self.status == "running":
                    self.status = "closed"
                self._end()

        def create() -> None:
            self._async_done = asyncio.Event()
            self._task = loop.create_task(updating())

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            create()
        else:
            loop.call_soon_threadsafe(create)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the bars are final; return whether they are."""
        return self._finished.wait(timeout)

    def __await__(self) -> Any:
        async def waiting() -> ProgressBar:
            if self._async_done is not None:
                await self._async_done.wait()
            else:
                while not self._finished.is_set():
                    await asyncio.sleep(self.interval)
            return self

        return waiting().__await__()

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{g.name or 'tasks'}: {g.finished}/{g.total}" for g in self.groups.values()
        )
        return f"<ProgressBar {self.status} ({counts})>"


def progress(
    *futures: Any,
    notebook: bool | None = None,
    multi: bool = True,
    complete: bool = True,
    group_by: str = "prefix",
    **kwargs: Any,
) -> ProgressBar | None:
    """Show the progress of futures, or of collections persisted on the cluster.

    Blocks until done in a terminal with a synchronous client (and returns None); in a
    notebook (``notebook=None`` detects one) or with an asynchronous client it returns a
    :class:`ProgressBar` at once and updates it in the background. ``multi``: one bar
    per key prefix; ``complete``: count the futures already done too. ``interval``
    (seconds, or a string such as ``"500ms"``) sets how often the bars update; other
    keyword arguments (``file=``, ``ncols=``...) go to tqdm.
    """
    if group_by != "prefix":
        raise ValueError(f"progress groups futures by 'prefix' only, not {group_by!r}")
    found = futures_in(list(futures))
    if not found:
        raise ValueError(
            "progress needs futures, or dask collections persisted on the cluster "
            "(x = client.persist(x) or x.persist() with a shoal Client); got "
            f"{', '.join(type(f).__name__ for f in futures) or 'nothing'}"
        )
    interval = parse_seconds(kwargs.pop("interval", 0.1))
    if not interval > 0:
        raise ValueError(
            f"progress interval must be a positive time (e.g. 0.1 or '100ms'), not {interval!r}"
        )
    if notebook is None:
        notebook = in_notebook()
    client: Client = found[0].client
    bar = ProgressBar(
        found, multi=multi, complete=complete, notebook=notebook, interval=interval, **kwargs
    )
    if client.asynchronous:
        assert client.loop is not None
        bar.start_task(client.loop)
        return bar
    if notebook:
        bar.start_thread()
        return bar
    bar.run()
    return None
