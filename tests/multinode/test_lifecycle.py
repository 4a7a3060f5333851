"""Daemon process lifecycle: home lock, stale lock, signals, graceful drain, bad config."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from accel_node.core import endpoints as E
from accel_node.errors import DaemonNotRunningError
from tests.support.daemons import Daemon, bare_env, cli, node_env

pytestmark = pytest.mark.multinode


def test_second_daemon_on_locked_home_is_refused(start_daemon: Callable[..., Daemon]) -> None:
    first = start_daemon("home")
    second = Daemon(first.home).start()
    assert second.proc is not None
    assert second.proc.wait(timeout=60) == 1
    assert f"pid {first.proc.pid}" in second.log() if first.proc else False
    assert "already running" in second.log() and "Traceback" not in second.log()  # one clear error
    # The first daemon is unaffected and still owns api.json.
    assert json.loads((first.home / "api.json").read_text())["pid"] == first.proc.pid  # type: ignore[union-attr]
    assert first.api.node.status().peer_id == first.peer_id


def test_stale_lock_of_killed_daemon_is_recovered(start_daemon: Callable[..., Daemon]) -> None:
    first = start_daemon("home")
    peer_id = first.peer_id
    first.stop(signal.SIGKILL)
    assert (first.home / "api.json").exists()  # left behind by the killed daemon
    # The CLI notices the recorded daemon is gone instead of hanging on a dead URL.
    result = cli(first.home, "status")
    assert result.returncode == 1
    assert "not running" in result.stderr
    again = Daemon(first.home).start().wait_ready()
    try:
        assert again.peer_id == peer_id
        assert again.api.node.status().peer_id == peer_id
    finally:
        again.kill()


def test_sigterm_exits_zero_within_grace_and_removes_api_json(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon("home")
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5 + 2  # shutdown_grace_s is 5 in tests
    assert not (daemon.home / "api.json").exists()
    assert "node stopped" in daemon.log()


def test_sigint_also_stops_gracefully(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("home")
    assert daemon.stop(signal.SIGINT) == 0
    assert not (daemon.home / "api.json").exists()


def test_in_flight_request_finishes_during_shutdown(start_daemon: Callable[..., Daemon]) -> None:
    """A request running when SIGTERM arrives still gets its answer; then the daemon exits 0."""
    # A TCP listener that accepts and never speaks: the daemon's dial hangs until dial_timeout_s.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    daemon = start_daemon("home", ACCEL_NODE_P2P_DIAL_TIMEOUT_S="2")
    target = f"/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWEodDWxbEep8zErZ2WVVsoTjryDVEBsXkuwaw5CNWC1Wd"
    outcome: dict[str, object] = {}

    def request() -> None:
        try:
            outcome["response"] = daemon.api.transport.send(
                E.PEERS_CONNECT, body={"addr": target}, checked=False
            )
        except DaemonNotRunningError as exc:  # the typed client's transport error
            outcome["error"] = exc

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.7)  # the request is now in flight (dialling)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=20)
    silent.close()
    assert "error" not in outcome, outcome
    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 502
    assert "timed out" in response.json()["detail"]
    assert daemon.proc.wait(timeout=20) == 0, daemon.log()


@pytest.mark.parametrize(
    ("config", "key", "message"),
    [
        ("[p2p]\nlisten_adrs = []\n", "[p2p] listen_adrs", "unknown key"),
        ('[api]\nport = "eighty"\n', "[api] port", "integer"),
        (
            '[p2p]\nlisten_addrs = ["/ip4/127.0.0.1/tcp/notaport"]\n',
            "[p2p] listen_addrs",
            "invalid multiaddr",
        ),
        ('[p2p]\nbootstrap = ["/ip4/127.0.0.1/tcp/4011"]\n', "[p2p] bootstrap", "/p2p/<peer-id>"),
        ('[api]\nhost = "0.0.0.0"\n', "[api] host", "allow_remote"),
        ('[nodes]\nname = "x"\n', "[nodes]", "unknown section"),
        ("[node\n", "(file)", "not valid TOML"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, config: str, key: str, message: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(config)  # `run` initialises the rest, then reads this
    result = cli(home, "run", env=bare_env(), timeout=60)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr and message in result.stderr, result.stderr
    assert not (home / "api.json").exists()


def test_bad_environment_override_exits_2(tmp_path: Path) -> None:
    result = cli(tmp_path / "home", "run", env=node_env(ACCEL_NODE_P2P_MDNS="sometimes"))
    assert result.returncode == 2
    assert "[p2p] mdns" in result.stderr and "environment" in result.stderr
    result = cli(tmp_path / "home", "config", "check", env=node_env(ACCEL_NODE_API_PROT="1"))
    assert result.returncode == 2
    assert "ACCEL_NODE_API_PROT" in result.stderr


def test_cli_without_daemon_exits_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert cli(home, "init").returncode == 0
    for args in (["status"], ["peers"], ["id", "--json"], ["config", "show"]):
        result = cli(home, *args)
        assert result.returncode == 1, args
        assert "no accel-node daemon is running" in result.stderr


def test_cli_usage_error_exits_2(tmp_path: Path) -> None:
    assert cli(tmp_path, "connect").returncode == 2  # missing ADDR
    assert cli(tmp_path, "no-such-command").returncode == 2


def test_connect_errors_via_cli(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("home", ACCEL_NODE_P2P_DIAL_TIMEOUT_S="2")
    bad = daemon.cli("connect", "/ip4/127.0.0.1/tcp/1")
    assert bad.returncode == 1 and "/p2p/<peer-id>" in bad.stderr and "HTTP 400" in bad.stderr
    unreachable = daemon.cli(
        "connect", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEodDWxbEep8zErZ2WVVsoTjryDVEBsXkuwaw5CNWC1Wd"
    )
    assert unreachable.returncode == 1 and "HTTP 502" in unreachable.stderr
    own = daemon.cli("connect", daemon.addr)
    assert own.returncode == 1 and "own peer id" in own.stderr


def test_json_logs_carry_structured_fields_and_no_token(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon("home", args=("--log-format", "json"))
    assert daemon.stop() == 0
    entries = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    ready = next(e for e in entries if e["msg"] == "node ready")
    assert ready["peer_id"] == daemon.peer_id and ready["level"] == "info" and ready["api"] == daemon.url
    assert any(e["msg"] == "node stopped" for e in entries)
    assert daemon.token() not in daemon.log()
