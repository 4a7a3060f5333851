"""Persistent Ed25519 identities for libp2p hosts.

The private key is stored in libp2p's protobuf key encoding (the same bytes go-libp2p and Kubo use),
so a key file can be inspected or reused by other libp2p tools. Files are created with mode 0600
and written atomically, so a crash never leaves a truncated key behind.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.peer.id import ID

from p2p.errors import IdentityError

MAX_KEY_FILE_BYTES = 4096


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_PRIVATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (owner read/write only).

    The bytes go to a temporary file of a random name beside ``path``, created with ``O_CREAT|O_EXCL|
    O_NOFOLLOW`` (so nothing planted in the directory, a symbolic link least of all, is opened or
    truncated), fsynced, then renamed over ``path``. A symbolic link at ``path`` itself is refused:
    a key or token is never written where a link points.
    """
    if path.is_symlink():
        raise IdentityError(f"{path} is a symbolic link; refusing to write a private file through it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, _PRIVATE_FLAGS, 0o600)
    except OSError as exc:
        raise IdentityError(f"cannot create a private file beside {path}: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform opens directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def generate_identity() -> KeyPair:
    """Create a fresh Ed25519 key pair."""
    return create_new_key_pair()


def save_identity(key_pair: KeyPair, path: Path) -> None:
    """Store ``key_pair``'s private key at ``path`` (0600, atomic)."""
    write_private_file(path, key_pair.private_key.serialize())


def load_identity(path: Path) -> KeyPair:
    """Load an Ed25519 key pair written by :func:`save_identity`."""
    try:
        size = path.stat().st_size
        if size > MAX_KEY_FILE_BYTES:
            raise IdentityError(f"identity file {path} is {size} bytes; expected a small key file")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise IdentityError(f"identity file {path} does not exist") from exc
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc.strerror}") from exc
    try:
        private_key = deserialize_private_key(data)
    except Exception as exc:  # protobuf and key decoders raise assorted errors
        raise IdentityError(f"identity file {path} is not a libp2p private key") from exc
    if private_key.get_type() != KeyType.Ed25519:
        raise IdentityError(f"identity file {path} holds a {private_key.get_type().name} key")
    return KeyPair(private_key, private_key.get_public_key())


def load_or_create_identity(path: Path) -> KeyPair:
    """Load the identity at ``path``, creating and saving a new one if the file is absent."""
    if path.exists():
        return load_identity(path)
    key_pair = generate_identity()
    save_identity(key_pair, path)
    return key_pair


def peer_id_of(key_pair: KeyPair) -> ID:
    """The libp2p peer id derived from ``key_pair``'s public key."""
    return ID.from_pubkey(key_pair.public_key)
