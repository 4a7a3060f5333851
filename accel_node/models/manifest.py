"""The model manifest: what a model package contains, signed by its publisher.

A package's manifest is stored as content (its CID names the model) in this form: a CBOR map
``{"manifest": {...}, "sig": <64 bytes>}``, where ``sig`` is the publisher's Ed25519 signature over
``DOMAIN`` followed by the canonical CBOR encoding of the manifest map. Canonical CBOR (sorted keys,
shortest integers) makes the signed bytes independent of who re-encodes the manifest.

:func:`verify_package` is the only way to obtain a :class:`Manifest` from bytes; it refuses, each
with its own error: oversize or malformed manifests, unsafe paths, unknown publishers, bad
signatures, expired manifests and version rollbacks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import cbor2

from accel_node.models.errors import (
    BadSignatureError,
    ExpiredManifestError,
    ManifestError,
    RollbackError,
    UnknownPublisherError,
)
from accel_node.models.keys import PublisherKey, verify
from p2p.codec.cbor import CborMap, as_list, load_map

DOMAIN = b"accel-node/model-manifest/v1\n"
FORMAT_VERSION = 1
MAX_FILES = 1024
MAX_IO = 256
MAX_TEXT = 4096
"""Bound on any text field before its own check (names, paths, ids are far shorter)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
KEY_ID = re.compile(r"^[0-9a-f]{32}$")
CID_RE = re.compile(r"^(b[a-z2-7]{20,200}|Qm[1-9A-HJ-NP-Za-km-z]{44})$")
DTYPES = frozenset(
    {
        "float32",
        "float16",
        "bfloat16",
        "float64",
        "int8",
        "uint8",
        "int16",
        "int32",
        "int64",
        "bool",
        "string",
    }
)


@dataclass(frozen=True)
class ManifestFile:
    path: str
    cid: str
    size: int
    sha256: str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    format: str
    entry: str
    files: tuple[ManifestFile, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    created: int
    expires: int
    publisher: str

    def to_map(self) -> dict[str, Any]:
        def spec(t: TensorSpec) -> dict[str, Any]:
            return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

        return {
            "v": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "entry": self.entry,
            "files": [{"path": f.path, "cid": f.cid, "size": f.size, "sha256": f.sha256} for f in self.files],
            "io": {"inputs": [spec(t) for t in self.inputs], "outputs": [spec(t) for t in self.outputs]},
            "created": self.created,
            "expires": self.expires,
            "publisher": self.publisher,
        }

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def signed_bytes(manifest_map: dict[str, Any]) -> bytes:
    return DOMAIN + cbor2.dumps(manifest_map, canonical=True)


def sign_manifest(manifest: Manifest, key: PublisherKey) -> bytes:
    """The package bytes (to be added as content) for ``manifest`` signed by ``key``."""
    if manifest.publisher != key.key_id:
        raise ManifestError(f"manifest names publisher {manifest.publisher}, signing key is {key.key_id}")
    body = manifest.to_map()
    parse_manifest_map(body)  # never sign something we would refuse to load
    return cbor2.dumps({"manifest": body, "sig": key.sign(signed_bytes(body))}, canonical=True)


def safe_path(path: object) -> str:
    """A relative POSIX path that stays inside the model directory."""
    if not isinstance(path, str) or not path or len(path) > 255 or "\x00" in path or "\\" in path:
        raise ManifestError(f"file path {path!r} is not a valid relative path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in path.split("/")):
        raise ManifestError(f"file path {path!r} escapes the model directory")
    return str(pure)


def _specs(items: object, where: str) -> tuple[TensorSpec, ...]:
    specs = []
    for item in as_list(items, where, MAX_IO, ManifestError):
        fields = CborMap(item, what=f"{where} entry", error=ManifestError)
        name = fields.text("name", max_len=MAX_TEXT)
        dtype = fields.text("dtype", max_len=MAX_TEXT)
        shape = fields.list_("shape", max_len=16)
        if dtype not in DTYPES:
            raise ManifestError(f"{where} tensor {name[:256]!r} has unknown dtype {dtype[:32]!r}")
        if not all(d is None or (isinstance(d, int | str) and not isinstance(d, bool)) for d in shape):
            raise ManifestError(f"{where} tensor {name[:256]!r} has a malformed shape")
        specs.append(TensorSpec(name[:256], dtype, tuple(shape)))
    return tuple(specs)


def parse_manifest_map(data: object) -> Manifest:
    """Structure and safety checks of a manifest map (no signature, trust or time checks)."""
    fields = CborMap(data, what="manifest", error=ManifestError)
    if (v := fields.integer("v")) != FORMAT_VERSION:
        raise ManifestError(f"unsupported manifest version {v}")
    name = fields.text("name", max_len=MAX_TEXT)
    if not NAME_RE.fullmatch(name):
        raise ManifestError(f"invalid model name {name[:256]!r}")
    version = fields.integer("version")
    fmt = fields.text("format", max_len=MAX_TEXT)
    if fmt != "onnx":
        raise ManifestError(f"unsupported model format {fmt[:32]!r}")
    publisher = fields.text("publisher", max_len=MAX_TEXT)
    if not KEY_ID.fullmatch(publisher):
        raise ManifestError("publisher must be a 32-hex-digit key id")
    created, expires = fields.integer("created"), fields.integer("expires")
    if expires <= created:
        raise ManifestError("manifest version must be >= 0 and expires later than created")
    raw_files = fields.list_("files", max_len=MAX_FILES)
    if not raw_files:
        raise ManifestError(f"manifest must list 1..{MAX_FILES} files")
    files = []
    for item in raw_files:
        entry_fields = CborMap(item, what="file", error=ManifestError)
        path = safe_path(entry_fields.text("path", max_len=MAX_TEXT))
        cid = entry_fields.text("cid", max_len=MAX_TEXT)
        size = entry_fields.integer("size")
        digest = entry_fields.text("sha256", max_len=MAX_TEXT)
        if not CID_RE.fullmatch(cid) or not HEX64.fullmatch(digest):
            raise ManifestError(f"file {path!r} has a malformed cid, size or sha256")
        files.append(ManifestFile(path, cid, size, digest))
    if len({f.path for f in files}) != len(files):
        raise ManifestError("manifest lists a path twice")
    entry = safe_path(fields.text("entry", max_len=MAX_TEXT))
    if entry not in {f.path for f in files}:
        raise ManifestError(f"entry {entry!r} is not one of the manifest's files")
    io = fields.map_("io")
    return Manifest(
        name=name,
        version=version,
        format=fmt,
        entry=entry,
        files=tuple(files),
        inputs=_specs(io.get("inputs"), "inputs"),
        outputs=_specs(io.get("outputs"), "outputs"),
        created=created,
        expires=expires,
        publisher=publisher,
    )


def verify_package(
    raw: bytes,
    *,
    trusted_key: Callable[[str], bytes | None],
    highest_version: Callable[[str, str], int | None],
    max_manifest_bytes: int,
    max_file_bytes: int,
    now: float | None = None,
) -> Manifest:
    """Verify package bytes and return the manifest, or raise the specific refusal.

    ``trusted_key(key_id)`` returns the public key of a trusted publisher (None if unknown);
    ``highest_version(publisher, name)`` the highest version accepted so far (None if none).
    """
    outer = load_map(raw, max_bytes=max_manifest_bytes, what="manifest", error=ManifestError)
    if set(outer) != {"manifest", "sig"} or not isinstance(outer.get("sig"), bytes):
        raise ManifestError("package must be a map of exactly 'manifest' and 'sig'")
    manifest = parse_manifest_map(outer.get("manifest"))
    public_key = trusted_key(manifest.publisher)
    if public_key is None:
        raise UnknownPublisherError(
            f"manifest of {manifest.name!r} is signed by unknown publisher {manifest.publisher}; "
            "trust it with 'accel-node trust add'"
        )
    if not verify(public_key, signed_bytes(outer.get("manifest")), outer.get("sig")):
        raise BadSignatureError(f"signature of manifest {manifest.name!r} does not verify")
    for f in manifest.files:
        if f.size > max_file_bytes:
            raise ManifestError(f"file {f.path!r} is {f.size} bytes; the limit is {max_file_bytes}")
    if (time.time() if now is None else now) >= manifest.expires:
        raise ExpiredManifestError(f"manifest of {manifest.name!r} expired at {manifest.expires}")
    highest = highest_version(manifest.publisher, manifest.name)
    if highest is not None and manifest.version < highest:
        raise RollbackError(
            f"{manifest.name!r} version {manifest.version} is older than version {highest} already accepted"
        )
    return manifest
