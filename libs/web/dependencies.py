"""Route dependencies built once at start: a value of the process (engine, publisher, settings) by name."""

from __future__ import annotations

from litestar.di import Provide


def constant(value: object) -> Provide:
    """Every request receives this same object; nothing is built per request."""
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)
