"""Real accel-node daemons as separate OS processes, one or a cluster (tests and benchmarks).

Tests and the benchmarks in ``scripts/bench`` share this harness, so a daemon is started, waited for
and stopped the same way everywhere: its own home, loopback listen addresses, free ports (the API on
port 0, libp2p on ``tcp/0``), no mDNS, no profiling unless asked for, and this tree first on
``PYTHONPATH``. A process is ready when the JSON file it writes (``api.json`` for a daemon) names its
pid; whatever goes wrong before that raises ``AssertionError`` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from accel_node.client import Client
from accel_node.errors import ApiError

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0


def bare_env() -> dict[str, str]:
    """The test process's environment without any ACCEL_NODE_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_NODE_")}


def process_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """:func:`bare_env` with unbuffered output and this tree first on ``PYTHONPATH``, then ``extra``."""
    env = bare_env()
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


OPEN_LAB_POLICY = {
    "ACCEL_NODE_POLICY_OPEN_ACTIONS": '["compute", "assign", "content", "learn", "capabilities"]',
}
"""Harnessed daemons lend every action to every peer: the multi-node tests and benchmarks build clusters
that serve each other compute and assignments, on loopback, and test those, not the policy. The safe
default ([policy] open_actions = content, capabilities) is tested by tests/policy and by tests that pass
``ACCEL_NODE_POLICY_OPEN_ACTIONS`` themselves."""


LOOPBACK_ENV = {
    **OPEN_LAB_POLICY,
    "ACCEL_NODE_P2P_LISTEN_ADDRS": '["/ip4/127.0.0.1/tcp/0"]',
    "ACCEL_NODE_P2P_MDNS": "false",
    "ACCEL_NODE_API_PORT": "0",
    "ACCEL_NODE_NODE_SHUTDOWN_GRACE_S": "5",
}
"""What every harnessed daemon gets: loopback only, free ports, no mDNS, a short shutdown grace, and
every action open to every peer (:data:`OPEN_LAB_POLICY`)."""


def node_env(**overrides: str) -> dict[str, str]:
    """Environment for a test daemon: loopback only, free ports, no mDNS, no profiling, no auto-dial,
    every action open to every peer (:data:`OPEN_LAB_POLICY`)."""
    return process_env(
        {
            **LOOPBACK_ENV,
            "ACCEL_NODE_PROFILE_AUTO": "off",  # tests that want a profile ask for one
            "ACCEL_NODE_P2P_AUTO_CONNECT": "false",  # keep the topology each test builds
            **overrides,
        }
    )


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


class Process:
    """A child process that says it is ready by writing a JSON file that contains its pid."""

    def __init__(self, name: str, ready_path: Path, log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.ready_path = ready_path
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.started_at = 0.0
        self.ready_at = 0.0
        self.cpu_at_ready = 0.0
        self.children_seen = 0

    def spawn(self, argv: list[str]) -> None:
        """Start ``argv`` in the repository root, its output appended to :attr:`log_path`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        self.started_at = time.monotonic()
        self.info = {}

    def poll_ready(self) -> bool:
        """True once the ready file names this process; raises if the process died."""
        if self.info:
            return True
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise AssertionError(f"{self.name} exited with {code}:\n{self.log(tail=4000)}")
        try:
            info = json.loads(self.ready_path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        if info.get("pid") != self.proc.pid:
            return False
        self.info = info
        self.ready_at = time.monotonic()
        self.cpu_at_ready = self.cpu_s(reaped_children=True)
        self.on_ready()
        return True

    def on_ready(self) -> None:
        """Hook for subclasses: read what the ready file points to."""

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Process:
        wait_all_ready([self], timeout)
        return self

    def log(self, tail: int | None = None) -> str:
        """The process's output so far (its last ``tail`` characters)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text if tail is None else text[-tail:]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self, *, reaped_children: bool = False) -> float:
        """CPU seconds of the process (with ``reaped_children``, plus children it has waited for:
        those land all at once when reaped, so a window measured with them is noisy)."""
        times = psutil.Process(self.pid).cpu_times()
        own = times.user + times.system
        return float(own + (times.children_user + times.children_system if reaped_children else 0.0))

    def memory(self) -> tuple[int, int]:
        """(RSS, USS) of the process alone, in bytes."""
        mem = psutil.Process(self.pid).memory_full_info()
        return int(mem.rss), int(mem.uss)

    def rss_bytes(self) -> tuple[int, int]:
        """(RSS, USS) of the process and any children, in bytes."""
        proc = psutil.Process(self.pid)
        rss = uss = 0
        children = proc.children(recursive=True)
        self.children_seen = max(self.children_seen, len(children))
        for p in [proc, *children]:
            try:
                mem = p.memory_full_info()
            except psutil.NoSuchProcess:
                continue
            rss += mem.rss
            uss += mem.uss
        return rss, uss

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20, *, force: bool = False) -> int | None:
        """Send ``sig`` and wait for the exit code. Past ``timeout`` the process is killed; then this
        raises, or with ``force`` returns None."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)  # Popen skips a process it has already reaped
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            if force:
                return None
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s of signal {sig}:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Daemon(Process):
    """One ``accel-node run`` process with its own home; its log lies next to the home.

    ``env`` overrides :func:`node_env`'s defaults; ``base_env`` replaces them (a benchmark that wants
    the daemon's own defaults passes ``process_env(LOOPBACK_ENV)``).
    """

    def __init__(self, home: Path, *, base_env: Mapping[str, str] | None = None, **env: str) -> None:
        full = node_env(**env) if base_env is None else {**base_env, **env}
        super().__init__(home.name, home / "api.json", home.parent / f"{home.name}.log", full)
        self.home = home
        self._token = ""
        self._api: Client | None = None

    def start(self, *extra_args: str) -> Daemon:
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self.spawn([sys.executable, "-m", "accel_node", "--home", str(self.home), *extra_args, "run"])
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Daemon:
        wait_all_ready([self], timeout)
        return self

    def on_ready(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # token() reads it later then
            self._token = (self.home / "api.token").read_text().strip()

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

    @property
    def addr(self) -> str:
        """A dialable loopback address of this daemon."""
        return next(str(a) for a in self.info["addrs"] if str(a).startswith("/ip4/127.0.0.1/"))

    def token(self) -> str:
        return self._token or (self.home / "api.token").read_text().strip()

    def client(self, timeout: float = 120.0) -> Client:
        """A new keep-alive typed client of the daemon's API, authorised with its token (close it:
        benchmarks hold one per thread, so each keeps its own connection)."""
        return Client(self.url, self.token(), timeout_s=timeout)

    @property
    def api(self) -> Client:
        """The daemon's own typed client, made on first use and again once the daemon's url changes
        (a restart); ``api.transport.send(..., checked=False)`` gives a raw response."""
        if self._api is None or self._api.url != self.url:
            if self._api is not None:
                self._api.close()
            self._api = self.client()
        return self._api

    def peer_ids(self) -> set[str]:
        return {p.peer_id for p in self.api.peers.list().peers}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, env=self.env, timeout=timeout)


def wait_all_ready(processes: Iterable[Process], timeout: float = READY_TIMEOUT_S) -> None:
    """Wait for processes started together (each one's ready time is recorded as it comes)."""
    waiting = list(processes)
    deadline = time.monotonic() + timeout
    while not all(p.poll_ready() for p in waiting):
        if time.monotonic() > deadline:
            late = [p for p in waiting if not p.info]
            raise AssertionError(
                f"not ready after {timeout} s: {', '.join(p.name for p in late)}:\n{late[0].log(tail=4000)}"
            )
        time.sleep(0.05)


class Cluster:
    """Daemons by name, homes under one root, started together and stopped together."""

    def __init__(self, root: Path, specs: Mapping[str, Mapping[str, str]], **common: Any) -> None:
        """``specs``: daemon name -> its ACCEL_NODE_* overrides; ``common``: passed to every
        :class:`Daemon` (``base_env``, shared overrides)."""
        self.root = root
        self.nodes = {name: Daemon(root / name, **{**common, **env}) for name, env in specs.items()}

    def __getitem__(self, name: str) -> Daemon:
        return self.nodes[name]

    def __iter__(self) -> Iterator[Daemon]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def alive(self) -> list[Daemon]:
        return [d for d in self if d.alive]

    def start(self, timeout: float = READY_TIMEOUT_S) -> Cluster:
        """Start every daemon, then wait for all of them."""
        for daemon in self:
            daemon.start()
        wait_all_ready(self, timeout)
        return self

    def connect(self, pairs: Iterable[tuple[str, str]] | None = None) -> None:
        """Connect the named pairs (every pair by default) through the API of the first of each."""
        names = list(self.nodes)
        if pairs is None:
            pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        for a, b in pairs:
            self[a].api.peers.connect(self[b].addr)

    def stop(
        self, timeout: float = 20.0, on_kill: Callable[[Daemon], None] | None = None
    ) -> dict[str, int | None]:
        """SIGTERM every daemon, wait for all together, then SIGKILL the stragglers (None)."""
        for daemon in self:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGTERM)  # Popen skips a process it has already reaped
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for daemon in self:
            if daemon.proc is None:
                continue
            try:
                codes[daemon.name] = daemon.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if on_kill is not None:
                    on_kill(daemon)
                daemon.kill()
                codes[daemon.name] = None
        return codes

    def kill(self) -> None:
        for daemon in self:
            daemon.kill()


def wait_until(
    predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def api_error(call: Callable[[], object]) -> ApiError:
    """The :class:`ApiError` that ``call`` (a typed-client call) raises; fails if it succeeds."""
    try:
        call()
    except ApiError as exc:
        return exc
    raise AssertionError("the call succeeded; an API error was expected")
