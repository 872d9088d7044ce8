"""asyncio transports: they move frames between processes and know nothing of ops.

Servers use :mod:`shoal.comm.connection` (``connect``/``listen``/``Connection``),
:mod:`shoal.comm.rpc` (``ConnectionPool``, ``serve_requests``) and
:mod:`shoal.comm.batched` (``BatchedSender``).  Every error raised here is a
:class:`shoal.errors.CommError` or, for invalid input, a ``ProtocolError``.
"""
