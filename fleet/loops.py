"""Objects bound to one asyncio event loop: connections, locks and tasks cannot cross loops."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def per_loop(factory: Callable[[], T]) -> Callable[[], T]:
    """A getter of the running loop's instance, made by `factory` on first use.

    daphne runs one loop; each async test has its own, so nothing leaks from one test to the next.
    """
    instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get() -> T:
        loop = asyncio.get_running_loop()
        instance = instances.get(loop)
        if instance is None:
            instance = instances[loop] = factory()
        return instance

    def peek() -> T | None:
        """The running loop's instance if there is one, without making it."""
        return instances.get(asyncio.get_running_loop())

    get.peek = peek
    return get
