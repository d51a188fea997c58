"""A real redis-server on a free loopback port, with no persistence, for the tests that share state through it.

Without redis-server installed those tests are skipped, and say why, unless MIXPANEL_MCP_REQUIRE_SERVICES=1
(CI sets it), which turns the skip into a failure: CI never silently runs without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import free_port

REQUIRE_VAR = "MIXPANEL_MCP_REQUIRE_SERVICES"


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)"
        if os.environ.get(REQUIRE_VAR, "").strip() == "1":
            pytest.fail(f"{reason}, and {REQUIRE_VAR}=1 says the tests that need it must run")
        pytest.skip(reason)
    return found


@dataclass
class RedisServer:
    binary: str
    port: int
    directory: Path
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory)]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self):  # noqa: ANN201 - redis.Redis, imported lazily
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)


@contextmanager
def redis_server(directory: Path, password: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), free_port(), directory, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
