"""A daemon with peers writes only its own lines: py-libp2p's go through logging, not to stderr.

py-libp2p turns propagation of its ``libp2p`` logger off at import, so outside pytest its records
fell through to ``logging.lastResort``: bare lines on stderr, dozens a second with three peers.
pytest attaches its capture handlers to non-propagating loggers too, which hides exactly that, so
the end-to-end check runs the hosts in a child process with the daemon's own logging set-up.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from p2p.liblogs import DHT_LOGGER, route_libp2p_logs
from tests.p2p.test_dht import line
from tests.support.daemons import REPO_ROOT

ROOT = REPO_ROOT

THREE_HOSTS = """
import warnings

import trio
from accel_node.logs import configure_logging
from tests.p2p.test_dht import line

configure_logging("info", "json")
warnings.warn("a library's warning", UserWarning)

async def main() -> None:
    async with line(3) as (a, b, c):
        for seq in range(1, 4):  # every query ends with the asker closing its stream
            assert await c.dht.put(c.key(), c.record(seq, {"seq": seq})) >= 1
            assert (await a.dht.get(c.key())).seq == seq
            assert await b.dht.put(b.key(), b.record(seq, {"seq": seq})) >= 1
            assert (await a.dht.get(b.key(), owner_first=False)) is not None

trio.run(main)
"""


def test_three_hosts_exchanging_records_write_only_structured_lines() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LIBP2P_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-c", THREE_HOSTS],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines, "the hosts logged nothing at all"
    for text in lines:  # every line went through the daemon's JSON formatter; none is a bare print
        assert text.startswith("{"), f"a line the daemon did not write: {text[:200]!r}"
        entry = json.loads(text)
        assert "Failed to read DHT message" not in entry["msg"]
    assert {json.loads(text)["logger"] for text in lines} <= {"p2p.host", "p2p.dht", "py.warnings"}
    assert any("a library's warning" in json.loads(text)["msg"] for text in lines)


async def test_clean_stream_ends_are_debug_and_real_problems_stay_warnings(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=DHT_LOGGER)
    async with line(3) as (a, _, c):
        for seq in range(1, 3):
            await c.dht.put(c.key(), c.record(seq, {"seq": seq}))
            assert await a.dht.get(c.key()) is not None
        logging.getLogger(DHT_LOGGER).warning("Failed to read DHT message from stream: %s", "bad varint")
    assert capfd.readouterr() == ("", "")
    records = [r for r in caplog.records if r.name == DHT_LOGGER]
    assert any(r.levelno == logging.DEBUG and "Failed to read DHT message" in r.getMessage() for r in records)
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert warnings == ["Failed to read DHT message from stream: bad varint"]


def test_route_libp2p_logs_is_idempotent_and_unpins_module_levels() -> None:
    route_libp2p_logs()
    route_libp2p_logs()
    assert logging.getLogger("libp2p").propagate
    assert len(logging.getLogger(DHT_LOGGER).filters) == 1
    assert logging.getLogger("libp2p.network.auto_connector").level == logging.NOTSET
