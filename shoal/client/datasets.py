"""Published datasets (Client methods): named collections and futures kept on the
scheduler for other clients, as in distributed.

``client.publish_dataset(df=persisted_df)`` stores the collection (pickled here, its
futures as keys) under a name; the scheduler keeps its keys alive until
``unpublish_dataset``, even after this client closes. Any client of the scheduler gets
it back with ``get_dataset("df")``, its futures now its own. ``client.datasets`` is the
same as a mapping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from shoal._types import Key
from shoal.coordination.client_base import check
from shoal.coordination.messages import DatasetDelete, DatasetGet, DatasetList, DatasetPublish
from shoal.coordination.values import decode, encode
from shoal.protocol.messages import ClientReleasesKeys, Message

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["Datasets", "DatasetsMixin"]

_no_default = object()


class Datasets(MutableMapping[Any, Any]):
    """``client.datasets``: the published datasets as a mapping (each access asks the
    scheduler; ``datasets[name] = x`` publishes, ``del datasets[name]`` unpublishes)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getitem__(self, name: Any) -> Any:
        return self._client.get_dataset(name)

    def __setitem__(self, name: Any, value: Any) -> None:
        self._client.publish_dataset(value, name=name)

    def __delitem__(self, name: Any) -> None:
        self._client.unpublish_dataset(name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._client.list_datasets())

    def __len__(self) -> int:
        return len(self._client.list_datasets())

    def __contains__(self, name: object) -> bool:
        return name in self._client.list_datasets()

    def __repr__(self) -> str:
        return f"<Datasets: {list(self)!r}>"


class DatasetsMixin:
    """The part of :class:`~shoal.Client` that publishes datasets."""

    _sync: Callable[..., Any]
    _request: Callable[[Message], Any]
    _send: Callable[..., None]
    _lock: threading.RLock
    _refs: Any
    _asynchronous: bool
    id: str

    @property
    def datasets(self) -> Datasets:
        """The published datasets, as a mutable mapping (synchronous clients only)."""
        if self._asynchronous:
            raise RuntimeError(
                "client.datasets is for synchronous clients; with asynchronous=True await "
                "client.get_dataset / publish_dataset / list_datasets instead"
            )
        return Datasets(self)  # type: ignore[arg-type]

    def publish_dataset(
        self, *args: Any, name: Key | None = None, override: bool = False, **kwargs: Any
    ) -> Any:
        """Publish collections or futures under names, for any client of the scheduler.

        ``publish_dataset(x, name="x")`` or ``publish_dataset(x=x, y=y)``. The futures
        inside stay alive until unpublished, even once this client closes. A name that
        exists already is refused (``KeyError``) unless ``override=True``.
        """
        if args:
            if name is None:
                raise ValueError(
                    "publish_dataset with positional arguments needs name=: "
                    "publish_dataset(df, name='df'), or publish_dataset(df=df)"
                )
            if len(args) > 1:
                raise ValueError(
                    f"publish_dataset got {len(args)} positional arguments for one name; "
                    "publish several as keywords: publish_dataset(a=a, b=b)"
                )
            kwargs = {name: args[0], **kwargs}  # type: ignore[dict-item]
        elif name is not None:
            raise ValueError(
                "publish_dataset(name=...) needs the value: publish_dataset(x, name=...)"
            )
        if not kwargs:
            raise ValueError("publish_dataset needs something to publish")
        client: Client = self  # type: ignore[assignment]
        entries = []
        for key, value in kwargs.items():
            data, keys = encode(client, value, "dataset")
            entries.append((key, data, keys))
        msg = DatasetPublish(tuple(entries), override, self.id)
        return self._sync(self._publish, msg, kwargs)

    async def _publish(self, msg: Message, values: Any) -> None:
        # ``values`` are kept referenced until the scheduler holds their futures' keys
        await self._dataset_request(msg)

    async def _dataset_request(self, msg: Message) -> Any:
        return check(await self._request(msg))

    def get_dataset(self, name: Key, default: Any = _no_default, **kwargs: Any) -> Any:
        """The dataset published as ``name``, its futures bound to this client.

        ``KeyError`` if there is none, unless a ``default`` is given.
        """
        return self._sync(self._get_dataset, name, default)

    async def _get_dataset(self, name: Key, default: Any) -> Any:
        try:
            reply = await self._dataset_request(DatasetGet(name, self.id))
        except KeyError:
            if default is _no_default:
                raise
            return default
        return decode(self, reply["value"], tuple(reply["keys"]))  # type: ignore[arg-type]

    def list_datasets(self, **kwargs: Any) -> Any:
        """The names of the published datasets."""
        return self._sync(self._list_datasets)

    async def _list_datasets(self) -> list[Any]:
        return list(await self._dataset_request(DatasetList()))

    def unpublish_dataset(self, name: Key, **kwargs: Any) -> Any:
        """Remove the dataset ``name`` (``KeyError`` if there is none); its futures are
        released unless a client still holds them."""
        return self._sync(self._dataset_request, DatasetDelete(name))

    def _release_unheld(self, keys: tuple[Key, ...]) -> None:
        """Release ``keys`` the scheduler counted as wanted by this client, when no
        Future of this client holds them (a value that could not be rebuilt here)."""
        with self._lock:
            unheld = tuple(k for k in keys if k not in self._refs)
            if unheld:
                self._send(ClientReleasesKeys(keys=unheld))
