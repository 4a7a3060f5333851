"""A node running in the test's own trio loop (for in-process checks beside the daemon-based ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from accel_node.config import load_config
from accel_node.home import NodeHome
from accel_node.node import Node
from tests.support.daemons import node_env


@asynccontextmanager
async def in_process_node(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[NodeHome, Node]]:
    """A fresh home at ``root`` and its node, started in this trio loop (the harness's loopback
    environment) and ready; stopped on exit."""
    for key, value in node_env().items():
        if key.startswith("ACCEL_NODE_"):
            monkeypatch.setenv(key, value)
    home = NodeHome(root)
    home.init()
    node = Node(home, load_config(home.config_path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.run)
        with trio.fail_after(60):
            await node.ready.wait()
        try:
            yield home, node
        finally:
            node.request_stop()
