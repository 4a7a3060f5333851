"""A real IPFS node serving the ``/api/v0`` RPC API, for the Kubo RPC backend tests: js-ipfs 0.66.1.

No Kubo binary can be installed from the registries the tests may use; js-ipfs (npm, installed into
``tests/jsipfs/node_modules`` by ``scripts/jsipfs.sh``) is a real IPFS implementation with the same
RPC API. Each daemon gets its own repo (``jsipfs init --profile test``) and is configured for a
test: API and swarm on 127.0.0.1 with ports picked by the OS (the daemon writes the API address it
bound to ``$IPFS_PATH/api``, so there is no race for a "free" port), no gateway, no gRPC/websocket
RPC server, no bootstrap peers, no mDNS.

A missing Node.js or js-ipfs install is a test failure with instructions, not a skip: CI installs
it (``scripts/test.sh`` runs ``scripts/jsipfs.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

JSIPFS_DIR = Path(__file__).resolve().parents[1] / "jsipfs"
JSIPFS_BIN = JSIPFS_DIR / "node_modules" / ".bin" / "jsipfs"
START_TIMEOUT_S = 90.0


def jsipfs_bin() -> Path:
    """The jsipfs executable; fails the test with what to do when it is not installed."""
    if shutil.which("node") is None:
        pytest.fail("Node.js is not installed; the Kubo RPC tests need Node.js >= 18 and npm for js-ipfs")
    if not JSIPFS_BIN.exists():
        pytest.fail(f"js-ipfs is not installed in {JSIPFS_DIR}; run scripts/jsipfs.sh (needs npm)")
    return JSIPFS_BIN


def _url(api: str) -> str:
    """``/ip4/127.0.0.1/tcp/PORT[/http]`` -> ``http://127.0.0.1:PORT``."""
    parts = api.strip("/").split("/")
    return f"http://{parts[1]}:{parts[3]}"


@dataclass
class JsIpfs:
    """One ``jsipfs daemon`` process and its repo (or, with ``binary``, a Kubo ``ipfs daemon``:
    the commands, the repo layout and the ``api`` file are the same)."""

    repo: Path
    binary: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    api: str = ""
    """The RPC API's multiaddr, e.g. ``/ip4/127.0.0.1/tcp/41234/http``."""
    peer_id: str = ""
    swarm: list[str] = field(default_factory=list)
    """Dialable swarm addresses, each ending in ``/p2p/<peer id>``."""

    @property
    def log_path(self) -> Path:
        return self.repo.parent / f"{self.repo.name}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def env(self) -> dict[str, str]:
        return {**os.environ, "IPFS_PATH": str(self.repo)}

    def init(self) -> None:
        result = subprocess.run(
            [str(self.binary or jsipfs_bin()), "init", "--profile", "test"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"jsipfs init failed:\n{result.stdout}\n{result.stderr}"
        config_path = self.repo / "config"
        config = json.loads(config_path.read_text())
        addresses = config["Addresses"]
        addresses.update({"API": "/ip4/127.0.0.1/tcp/0", "Swarm": ["/ip4/127.0.0.1/tcp/0"]})
        addresses["Gateway"] = "" if self.binary is None else []  # js-ipfs: a string; Kubo: a list
        if "RPC" in addresses:  # js-ipfs's gRPC-over-websocket server, on a fixed port by default
            addresses["RPC"] = ""
        config["Bootstrap"] = []
        config.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
        if "webRTCStar" in config["Discovery"]:  # js-ipfs only
            config["Discovery"]["webRTCStar"]["Enabled"] = False
        config_path.write_text(json.dumps(config, indent=2))

    def start(self) -> JsIpfs:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary or jsipfs_bin()), "daemon"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        api_file = self.repo / "api"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jsipfs daemon exited with {self.proc.returncode}:\n{self.log()}")
            if api_file.exists():
                self.api = api_file.read_text().strip()
                try:
                    ident = self.rpc("id").json()
                except httpx.HTTPError:
                    time.sleep(0.1)
                    continue
                self.peer_id = ident["ID"]
                self.swarm = [a for a in ident["Addresses"] if "/tcp/" in a]
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"jsipfs daemon not ready after {START_TIMEOUT_S} s:\n{self.log()}")

    def rpc(self, command: str, timeout: float = 30, **params: str) -> httpx.Response:
        """POST ``/api/v0/<command>`` (for checks made beside the client under test)."""
        with httpx.Client(base_url=_url(self.api), timeout=timeout, trust_env=False) as client:
            response = client.post(f"/api/v0/{command}", params=params)
        response.raise_for_status()
        return response

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_jsipfs(repo: Path, binary: Path | None = None) -> JsIpfs:
    """Init a fresh repo at ``repo`` and start a daemon on it (stop it with :meth:`JsIpfs.stop`).

    ``binary`` runs that IPFS implementation instead of js-ipfs (a Kubo ``ipfs``).
    """
    repo.parent.mkdir(parents=True, exist_ok=True)
    node = JsIpfs(repo, binary)
    node.init()
    return node.start()
