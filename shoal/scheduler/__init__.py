"""The scheduler: a pure state machine (``state``) inside a thin asyncio server."""
