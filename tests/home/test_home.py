"""The node home: init, file modes, identity persistence, the daemon lock."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from accel_node.errors import HomeError, HomeLockedError
from accel_node.home import NodeHome, default_home_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_private_files_and_is_idempotent(tmp_path: Path) -> None:
    home = NodeHome(tmp_path / "h")
    first = home.init()
    assert set(first.created) == {"config.toml", "identity.key", "api.token", "api.read.token"}
    assert mode(home.root) == 0o700
    assert mode(home.identity_path) == 0o600 and mode(home.token_path) == 0o600
    token = home.token()
    second = home.init()
    assert second.created == [] and second.peer_id == first.peer_id and home.token() == token
    assert first.peer_id.startswith("12D3KooW")  # Ed25519 peer ids


def test_corrupt_identity_is_a_clear_error(tmp_path: Path) -> None:
    home = NodeHome(tmp_path / "h")
    home.init()
    home.identity_path.write_bytes(b"garbage")
    with pytest.raises(HomeError, match="not a libp2p private key"):
        home.identity()


def test_default_home_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ACCEL_NODE_HOME", str(tmp_path))
    assert default_home_path() == tmp_path
    monkeypatch.delenv("ACCEL_NODE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home_path() == tmp_path / "xdg" / "accel-node"


def _hold_lock(
    root: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    with NodeHome(Path(root)).lock():
        ready.set()
        release.wait(30)


def test_lock_refuses_a_second_holder_and_names_its_pid(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(HomeLockedError, match=f"pid {holder.pid}"), home.lock():
            pass
    finally:
        release.set()
        holder.join(30)
    with home.lock():  # released by the holder
        assert home.lock_path.read_text().strip() == str(os.getpid())


def test_stale_lock_of_a_dead_process_is_recovered(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(30)
    holder.kill()  # dies holding the lock; the pid stays in the file
    holder.join(30)
    assert home.lock_path.read_text().strip() == str(holder.pid)
    with home.lock():
        assert home.lock_path.read_text().strip() == str(os.getpid())
