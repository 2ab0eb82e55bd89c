"""Graceful-shutdown hooks, run by fleet.serve before daphne cancels the applications."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

_hooks: list[Callable[[], Awaitable[None]]] = []


def register(hook: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """Run `hook` (an async callable) when the server shuts down; hooks run in registration order."""
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


async def run_hooks(within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for hook in list(_hooks):
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.warning("shutdown: no time left for %s", getattr(hook, "__qualname__", hook))
            continue
        try:
            await asyncio.wait_for(hook(), remaining)
        except Exception:
            logger.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))
