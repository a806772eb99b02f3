"""Real-server fixtures: a `ServerProcess` factory that always stops what it started."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from realserver_helpers import ServerProcess

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[ServerProcess] = []

    def factory(database_url: str, **kwargs: object) -> ServerProcess:
        server = ServerProcess(tmp_path, database_url, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.run()

    yield factory
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.stop()
