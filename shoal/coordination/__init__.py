"""Coordination between tasks and clients: Variable, Queue, Lock, Semaphore, Event,
Pub/Sub, and published datasets.

Every primitive lives on the scheduler (:mod:`shoal.coordination.scheduler_ext` and the
modules it installs), addressed by name, so that any client or task (through
``shoal.get_client()``) can reach it. Values travel as ``Opaque`` bytes, pickled by the
sender and unpickled by the receiver; Futures inside them travel as keys, which the
scheduler keeps alive while the primitive holds them (see :mod:`.values`).

This package's ``__init__`` imports nothing, so the scheduler process can install its
side without importing the client or dask.
"""
