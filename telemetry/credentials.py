"""Robot credentials cached per process, so that a handshake costs no database round trip in the common case.

Each daphne process keeps `robot_id -> Credential(pk, token_hash, active)` for TELEMETRY_AUTH_CACHE_TTL
(at most TELEMETRY_AUTH_CACHE_SIZE robots, least recently used out first). A wrong token for a cached
robot costs one SHA-256 and a constant-time compare. Unknown robot ids are remembered apart, for
TELEMETRY_AUTH_UNKNOWN_TTL and at most TELEMETRY_AUTH_UNKNOWN_SIZE of them, so made-up ids cannot grow
the process's memory.

Misses are loaded in batches (one `robot_id IN (...)` query per batch) on a small executor of this
module's own, never on the thread-sensitive thread that history writes use: a reconnect storm of
10,000 robots costs a few dozen queries, and a flood of bogus handshakes cannot delay the history.

Revocation, rotation, deletion and provisioning publish the robot ids on the Redis Pub/Sub channel
CHANNEL after they commit (`invalidate`); every process drops those entries at once and tells its
listeners (the live sockets re-check). A process that loses its subscription drops its whole cache
when it subscribes again, because it cannot know what it missed; the TTL is the last safety net.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, transaction

from fleet.loops import per_loop
from fleet.redis import get_client, new_async_client
from telemetry.tokens import hash_token

logger = logging.getLogger(__name__)

CHANNEL = "telemetry:credentials"
EVERYTHING = "*"
LOAD_BATCH = 500  # ids per query: below SQLite's bound on query parameters
LOADERS = 2  # queries in flight at once, one per executor thread
PUBLISH_BATCH = 1000  # ids per invalidation message
# Tokens are 43 characters; anything much longer is not one, and is not worth hashing.
MAX_TOKEN_LENGTH = 256
RESUBSCRIBE_DELAY = 1.0

_executor: ThreadPoolExecutor | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    pk: int
    token_hash: str
    active: bool


def load_credentials(robot_ids: list[str]) -> dict[str, Credential]:
    """The credentials of those robots that exist, in one query (run in the loader's executor)."""
    from telemetry.models import Robot

    # Like a request: a connection past CONN_MAX_AGE or one that failed is replaced, a pooled one returned.
    close_old_connections()
    try:
        rows = Robot.objects.filter(robot_id__in=robot_ids).values_list("robot_id", "pk", "token_hash", "is_active")
        return {robot_id: Credential(pk, token_hash, active) for robot_id, pk, token_hash, active in rows}
    finally:
        close_old_connections()


def _loader_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=LOADERS, thread_name_prefix="credentials")
    return _executor


def token_fits(token: str | None, credential: Credential | None) -> bool:
    if not token or credential is None or not credential.active or len(token) > MAX_TOKEN_LENGTH:
        return False
    return hmac.compare_digest(hash_token(token), credential.token_hash)


class CredentialCache:
    """This event loop's cache. Use `get_cache()`."""

    def __init__(self) -> None:
        self.known: OrderedDict[str, tuple[Credential, float]] = OrderedDict()
        self.unknown: OrderedDict[str, float] = OrderedDict()
        self.listeners: list[Callable[[set[str] | None], None]] = []
        self.loads = 0  # queries made (tests and the bench read it)
        self._waiting: dict[str, asyncio.Future] = {}
        self._queued: list[str] = []
        self._loaders: set[asyncio.Task] = set()
        # Bumped by each invalidation: a load that was in flight meanwhile answers its callers but is not kept.
        self._epoch = 0
        self._subscriber: asyncio.Task | None = None
        self.subscribed = asyncio.Event()

    # --- reading ----------------------------------------------------------------------------------

    async def authenticate(self, robot_id: str, token: str | None) -> Credential | None:
        """The robot's credential when `token` is its current token and the robot is active; else None."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        credential = await self.lookup(robot_id)
        return credential if token_fits(token, credential) else None

    async def still_valid(self, robot_id: str, token_hash: str) -> str | None:
        """None while a socket opened with `token_hash` may stay open; else why not (revoked, token_rotated)."""
        credential = await self.lookup(robot_id)
        if credential is None or not credential.active:
            return "revoked"
        if not hmac.compare_digest(credential.token_hash, token_hash):
            return "token_rotated"
        return None

    async def lookup(self, robot_id: str) -> Credential | None:
        """The robot's credential, None for an unknown robot; from the cache, else from the database."""
        now = asyncio.get_running_loop().time()
        entry = self.known.get(robot_id)
        if entry is not None:
            if entry[1] > now:
                self.known.move_to_end(robot_id)
                return entry[0]
            del self.known[robot_id]
        expires = self.unknown.get(robot_id)
        if expires is not None:
            if expires > now:
                return None
            del self.unknown[robot_id]
        self.ensure_subscribed()
        return await asyncio.shield(self._miss(robot_id))

    def _miss(self, robot_id: str) -> asyncio.Future:
        future = self._waiting.get(robot_id)
        if future is None:
            future = self._waiting[robot_id] = asyncio.get_running_loop().create_future()
            self._queued.append(robot_id)
        while self._queued and len(self._loaders) < LOADERS:
            task = asyncio.get_running_loop().create_task(self._load())
            self._loaders.add(task)
            task.add_done_callback(self._loaders.discard)
        return future

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queued:
            # Misses that arrive while a query runs wait for the next one, so batches grow with the load.
            robot_ids, self._queued = self._queued[:LOAD_BATCH], self._queued[LOAD_BATCH:]
            epoch = self._epoch
            self.loads += 1
            try:
                found = await loop.run_in_executor(_loader_executor(), load_credentials, robot_ids)
            except Exception as exc:
                logger.warning("credential lookup failed (%s); refusing %d handshake(s)", exc, len(robot_ids))
                for robot_id in robot_ids:
                    future = self._waiting.pop(robot_id)
                    if not future.done():
                        future.set_exception(exc)
                continue
            keep = epoch == self._epoch
            now = loop.time()
            for robot_id in robot_ids:
                credential = found.get(robot_id)
                if keep:
                    self._remember(robot_id, credential, now)
                future = self._waiting.pop(robot_id)
                if not future.done():
                    future.set_result(credential)

    def _remember(self, robot_id: str, credential: Credential | None, now: float) -> None:
        if credential is None:
            self.unknown[robot_id] = now + settings.TELEMETRY_AUTH_UNKNOWN_TTL
            if len(self.unknown) > settings.TELEMETRY_AUTH_UNKNOWN_SIZE:
                self.unknown.popitem(last=False)
            return
        self.known[robot_id] = (credential, now + settings.TELEMETRY_AUTH_CACHE_TTL)
        if len(self.known) > settings.TELEMETRY_AUTH_CACHE_SIZE:
            self.known.popitem(last=False)

    # --- invalidation -----------------------------------------------------------------------------

    def forget(self, robot_ids: Iterable[str] | None) -> None:
        """Drop these robots' entries (None: every entry) and tell the listeners."""
        self._epoch += 1
        if robot_ids is None:
            self.known.clear()
            self.unknown.clear()
            changed = None
        else:
            changed = set(robot_ids)
            for robot_id in changed:
                self.known.pop(robot_id, None)
                self.unknown.pop(robot_id, None)
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:
                logger.exception("credential listener failed")

    def ensure_subscribed(self) -> None:
        if self._subscriber is None or self._subscriber.done():
            self._subscriber = asyncio.get_running_loop().create_task(self._subscribe(), name="credential-subscriber")

    async def _subscribe(self) -> None:
        while True:
            client = new_async_client(socket_timeout=None)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if self.known or self.unknown:
                        self.forget(None)  # whatever was published while we were not listening
                    self.subscribed.set()
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None:
                            self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                logger.warning("credential invalidations unavailable (%s); resubscribing", exc)
                await asyncio.sleep(RESUBSCRIBE_DELAY)
            finally:
                await client.aclose()

    def _on_message(self, data: bytes) -> None:
        try:
            robot_ids = json.loads(data)
        except ValueError:
            logger.warning("ignoring a malformed credential invalidation")
            return
        self.forget(None if robot_ids == EVERYTHING else [str(robot_id) for robot_id in robot_ids])

    async def close(self) -> None:
        for task in [self._subscriber, *self._loaders]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._subscriber, *self._loaders] if t is not None], return_exceptions=True)


# The cache of the running event loop.
get_cache = per_loop(CredentialCache)


def invalidate(robot_ids: Iterable[str] | None) -> None:
    """Tell every process to forget these robots' credentials (None: all), once the transaction commits.

    Errors are logged, never raised: the change itself has committed, and the caches' TTL catches up.
    """
    payloads = [EVERYTHING] if robot_ids is None else list(robot_ids)
    if not payloads:
        return
    transaction.on_commit(lambda: publish(payloads))


def robot_changed(sender, instance, **kwargs) -> None:
    """post_save / post_delete of a Robot. Queryset update() and bulk_create() call `invalidate` themselves."""
    invalidate([instance.robot_id])


def publish(payloads: list[str]) -> None:
    """Publish an invalidation now (after a commit): robot ids, or [EVERYTHING]. Errors are logged."""
    try:
        client = get_client()
        if payloads == [EVERYTHING]:
            client.publish(CHANNEL, json.dumps(EVERYTHING))
            return
        for start in range(0, len(payloads), PUBLISH_BATCH):
            client.publish(CHANNEL, json.dumps(payloads[start : start + PUBLISH_BATCH]))
    except Exception:
        logger.exception("could not publish a credential invalidation; caches catch up within their TTL")
