from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemons import Daemon


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons (separate processes) with homes under tmp_path; all are killed at teardown."""
    started: list[Daemon] = []

    def start(name: str = "node", *, wait: bool = True, args: tuple[str, ...] = (), **env: str) -> Daemon:
        daemon = Daemon(tmp_path / name, **env).start(*args)
        started.append(daemon)
        return daemon.wait_ready() if wait else daemon

    yield start
    for daemon in started:
        daemon.kill()
