"""Real accel-node daemons as separate OS processes, one or a cluster (tests and benchmarks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

READY_TIMEOUT_S = 60.0


def bare_env() -> dict[str, str]:
    """The test process's environment without any ACCEL_NODE_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_NODE_")}


def node_env(**overrides: str) -> dict[str, str]:
    """Environment for a test daemon: loopback only, free ports, no mDNS, quiet libp2p."""
    env = bare_env()
    env.update(
        {
            "ACCEL_NODE_P2P_LISTEN_ADDRS": '["/ip4/127.0.0.1/tcp/0"]',
            "ACCEL_NODE_P2P_MDNS": "false",
            "ACCEL_NODE_API_PORT": "0",
            "ACCEL_NODE_NODE_SHUTDOWN_GRACE_S": "5",
            "ACCEL_NODE_PROFILE_AUTO": "off",  # tests that want a profile ask for one
            "ACCEL_NODE_P2P_AUTO_CONNECT": "false",  # keep the topology each test builds
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``accel-node --home HOME ARGS...`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "accel_node", "--home", str(home), *args],
        env=env or node_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Daemon:
    """One ``accel-node run`` process with its own home."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.env = node_env(**env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home.parent / f"{home.name}.log"
        self.info: dict[str, Any] = {}

    def start(self, *extra_args: str) -> Daemon:
        self.home.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "accel_node", "--home", str(self.home), *extra_args, "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Daemon:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        api_json = self.home / "api.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                info = json.loads(api_json.read_text())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
                continue
            if info.get("pid") == self.proc.pid:
                self.info = info
                return self
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

    @property
    def addr(self) -> str:
        """A dialable loopback address of this daemon."""
        return next(a for a in self.info["addrs"] if a.startswith("/ip4/127.0.0.1/"))

    def token(self) -> str:
        return (self.home / "api.token").read_text().strip()

    def api(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token if token is not None else self.token()}"}
        headers.update(kwargs.pop("headers", {}))
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.request(method, path, headers=headers, **kwargs)

    def peer_ids(self) -> set[str]:
        response = self.api("GET", "/v1/peers")
        response.raise_for_status()
        return {p["peer_id"] for p in response.json()["peers"]}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, env=self.env, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"daemon did not exit within {timeout} s of signal {sig}:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
