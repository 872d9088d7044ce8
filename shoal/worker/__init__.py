"""The worker: a pure state machine (``state``) inside a thin asyncio server."""
