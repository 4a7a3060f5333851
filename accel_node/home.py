"""The node home: one directory per node holding its config, identity, API token and runtime files.

Layout::

    HOME/config.toml    configuration (written from the documented example by ``init``)
    HOME/identity.key   Ed25519 libp2p private key, protobuf-encoded, mode 0600
    HOME/api.token      bearer token of the control API (admin scope), mode 0600
    HOME/api.read.token bearer token of the control API's read-only scope, mode 0600
    HOME/node.lock      held (flock) by the running daemon; records its pid
    HOME/api.json       written while the daemon runs: {"url", "peer_id", "addrs", "pid"}
    HOME/node.db        SQLite store (path configurable)

The lock is an ``flock`` on ``node.lock``: the kernel releases it when the holder dies, so the lock of
a killed daemon is recovered by the next start without guessing from pids.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_data_dir

from accel_node.errors import HomeError, HomeLockedError

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

# The identity and config helpers import py-libp2p; they are imported where used, so that CLI
# commands that only read api.json and the token start without loading the networking stack.

HOME_ENV = "ACCEL_NODE_HOME"
ADMIN = "admin"  # API token scopes: admin may do anything, read only safe reads that reveal no secret
READ = "read"
SCOPES = (ADMIN, READ)
MAX_SMALL_FILE_BYTES = 64 * 1024


def default_home_path() -> Path:
    """``$ACCEL_NODE_HOME`` if set, else the user's XDG data directory (``~/.local/share/accel-node``)."""
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path(user_data_dir("accel-node", appauthor=False))


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (signal 0 probes without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class InitResult:
    """What ``init`` found or created."""

    home: Path
    peer_id: str
    created: list[str]


class NodeHome:
    """Paths and file operations of one node home."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def identity_path(self) -> Path:
        return self.root / "identity.key"

    @property
    def token_path(self) -> Path:
        return self.root / "api.token"

    @property
    def read_token_path(self) -> Path:
        return self.root / "api.read.token"

    def token_file(self, scope: str) -> Path:
        """The token file of an API scope (:data:`ADMIN` or :data:`READ`)."""
        return self.token_path if scope == ADMIN else self.read_token_path

    @property
    def lock_path(self) -> Path:
        return self.root / "node.lock"

    @property
    def api_info_path(self) -> Path:
        return self.root / "api.json"

    def resolve(self, relative: str) -> Path:
        """A path from config, taken relative to the home unless absolute."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def is_initialised(self) -> bool:
        return self.config_path.exists() and self.identity_path.exists() and self.token_path.exists()

    def init(self) -> InitResult:
        """Create whatever of config, identity and token is missing; never overwrites."""
        from accel_node.config import render_example
        from p2p.errors import IdentityError
        from p2p.identity import load_or_create_identity, peer_id_of, write_private_file

        created: list[str] = []
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.config_path.exists():
                self.config_path.write_text(render_example(), encoding="utf-8")
                created.append(self.config_path.name)
            if not self.identity_path.exists():
                created.append(self.identity_path.name)
            key_pair = load_or_create_identity(self.identity_path)
            if not self.token_path.exists():
                write_private_file(self.token_path, secrets.token_urlsafe(32).encode("ascii"))
                created.append(self.token_path.name)
            if self.ensure_read_token():
                created.append(self.read_token_path.name)
        except IdentityError as exc:
            raise HomeError(str(exc)) from exc
        except OSError as exc:
            raise HomeError(f"cannot initialise node home {self.root}: {exc.strerror}") from exc
        return InitResult(self.root, str(peer_id_of(key_pair)), created)

    def identity(self) -> KeyPair:
        from p2p.errors import IdentityError
        from p2p.identity import load_identity

        try:
            return load_identity(self.identity_path)
        except IdentityError as exc:
            raise HomeError(f"{exc}; run 'accel-node init' to create one") from exc

    def token(self, scope: str = ADMIN) -> str:
        """The API token of ``scope`` as its file holds it now (the daemon may have rotated it)."""
        path = self.token_file(scope)
        try:
            token = self._read_small(path).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise HomeError(f"cannot read API token {path}: {exc}") from exc
        if len(token) < 16:
            raise HomeError(f"API token in {path} is too short")
        return token

    def ensure_read_token(self) -> bool:
        """Create the read-only token if the home has none (homes made before scopes); whether it did."""
        if self.read_token_path.exists():
            return False
        self.write_token(READ, new_token())
        return True

    def write_token(self, scope: str, token: str) -> None:
        """Replace the token file of ``scope`` atomically (mode 0600)."""
        from p2p.identity import write_private_file

        try:
            write_private_file(self.token_file(scope), token.encode("ascii"))
        except OSError as exc:
            raise HomeError(f"cannot write API token {self.token_file(scope)}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the home's daemon lock for the duration of the block."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                raise HomeLockedError(
                    f"another accel-node daemon (pid {holder}) is already running on {self.root}; "
                    "stop it first or use a different --home"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def write_api_info(self, info: dict[str, Any]) -> None:
        from p2p.identity import write_private_file

        write_private_file(self.api_info_path, json.dumps(info, indent=2).encode("utf-8"))

    def remove_api_info(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.api_info_path.unlink()

    def read_api_info(self) -> dict[str, Any] | None:
        """The running daemon's api.json, or None when there is none."""
        try:
            info = json.loads(self._read_small(self.api_info_path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise HomeError(f"cannot read {self.api_info_path}: {exc}") from exc
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            raise HomeError(f"{self.api_info_path} is malformed")
        return info

    @staticmethod
    def _read_small(path: Path) -> bytes:
        with path.open("rb") as f:
            data = f.read(MAX_SMALL_FILE_BYTES + 1)
        if len(data) > MAX_SMALL_FILE_BYTES:
            raise OSError(f"{path} is larger than {MAX_SMALL_FILE_BYTES} bytes")
        return data


def new_token() -> str:
    return secrets.token_urlsafe(32)


class ApiTokens:
    """The tokens the running control API accepts, one per scope, held in memory and in their files.

    :meth:`scope_of` compares an ``Authorization`` header with every scope's token in constant time;
    :meth:`rotate` writes a fresh token file (atomically) and swaps the token in memory in the same
    step, so the old token is refused from the next request on, while clients that read the file
    (the CLI) pick up the new one.
    """

    def __init__(self, tokens: Mapping[str, str], *, home: NodeHome | None = None) -> None:
        """``tokens`` by scope (a scope left out has no token); ``home``: where rotation writes."""
        self._home = home
        self._expected = {scope: self._header(token) for scope, token in tokens.items()}

    @classmethod
    def load(cls, home: NodeHome) -> ApiTokens:
        """The tokens of ``home``'s files (the read-only one created if the home has none yet)."""
        home.ensure_read_token()
        return cls({scope: home.token(scope) for scope in SCOPES}, home=home)

    @staticmethod
    def _header(token: str) -> bytes:
        return f"Bearer {token}".encode("ascii")

    def scope_of(self, authorization: bytes) -> str | None:
        """The scope an ``Authorization`` header value grants, or None."""
        found = None
        for scope, expected in self._expected.items():
            if hmac.compare_digest(authorization, expected):
                found = scope
        return found

    def rotate(self, scope: str) -> Path:
        """Replace the token of ``scope``; the path of its new file."""
        if scope not in SCOPES:
            raise HomeError(f"unknown API token scope {scope!r}")
        if self._home is None:
            raise HomeError("these API tokens have no node home to write a new token to")
        token = new_token()
        self._home.write_token(scope, token)
        self._expected[scope] = self._header(token)
        return self._home.token_file(scope)
