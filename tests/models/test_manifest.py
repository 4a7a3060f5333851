"""Model manifests: signing, and every refusal the issue names, each with its own error."""

from __future__ import annotations

import time
from pathlib import Path

import cbor2
import pytest

from accel_node.models.errors import (
    BadSignatureError,
    ExpiredManifestError,
    ManifestError,
    PublisherKeyError,
    RollbackError,
    UnknownPublisherError,
)
from accel_node.models.keys import KeyFiles, PublisherKey, format_public_key, parse_public_key
from accel_node.models.manifest import Manifest, ManifestFile, TensorSpec, sign_manifest, verify_package

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SHA = "a" * 64


@pytest.fixture
def key(tmp_path: Path) -> PublisherKey:
    return KeyFiles(tmp_path / "keys").create("alice")


def manifest(key: PublisherKey, **changes: object) -> Manifest:
    now = int(time.time())
    fields: dict[str, object] = {
        "name": "mlp",
        "version": 3,
        "format": "onnx",
        "entry": "model.onnx",
        "files": (ManifestFile("model.onnx", CID, 1234, SHA),),
        "inputs": (TensorSpec("x", "float32", ("batch", 16)),),
        "outputs": (TensorSpec("y", "float32", ("batch", 4)),),
        "created": now,
        "expires": now + 3600,
        "publisher": key.key_id,
    }
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def verify(
    raw: bytes,
    key: PublisherKey,
    *,
    highest: int | None = None,
    max_manifest: int = 1 << 20,
    max_file: int = 1 << 30,
) -> Manifest:
    return verify_package(
        raw,
        trusted_key=lambda kid: key.public_key if kid == key.key_id else None,
        highest_version=lambda publisher, name: highest,
        max_manifest_bytes=max_manifest,
        max_file_bytes=max_file,
    )


def test_signed_manifest_verifies_and_round_trips(key: PublisherKey) -> None:
    original = manifest(key)
    assert verify(sign_manifest(original, key), key) == original


def test_tampered_manifest_has_a_bad_signature(key: PublisherKey) -> None:
    package = cbor2.loads(sign_manifest(manifest(key), key))
    package["manifest"]["files"][0]["size"] = 999_999
    with pytest.raises(BadSignatureError):
        verify(cbor2.dumps(package), key)
    package = cbor2.loads(sign_manifest(manifest(key), key))
    package["sig"] = bytes(64)
    with pytest.raises(BadSignatureError):
        verify(cbor2.dumps(package), key)


def test_unknown_publisher_is_refused(key: PublisherKey, tmp_path: Path) -> None:
    stranger = KeyFiles(tmp_path / "other").create("mallory")
    with pytest.raises(UnknownPublisherError, match="unknown publisher"):
        verify(sign_manifest(manifest(stranger), stranger), key)


def test_expired_manifest_is_refused(key: PublisherKey) -> None:
    now = int(time.time())
    with pytest.raises(ExpiredManifestError):
        verify(sign_manifest(manifest(key, created=now - 7200, expires=now - 1), key), key)


def test_rollback_is_refused_but_the_same_version_is_not(key: PublisherKey) -> None:
    raw = sign_manifest(manifest(key, version=3), key)
    assert verify(raw, key, highest=3).version == 3
    with pytest.raises(RollbackError, match="older than version 4"):
        verify(raw, key, highest=4)


def test_size_limits(key: PublisherKey) -> None:
    raw = sign_manifest(manifest(key), key)
    with pytest.raises(ManifestError, match="limit"):
        verify(raw, key, max_manifest=len(raw) - 1)
    with pytest.raises(ManifestError, match=r"model\.onnx.*limit"):
        verify(raw, key, max_file=1000)


@pytest.mark.parametrize(
    "path", ["../evil.onnx", "/etc/passwd", "a/../../b", "a\\b", "", "a//b", "./x", "x/."]
)
def test_paths_escaping_the_model_directory_are_refused(key: PublisherKey, path: str) -> None:
    bad = manifest(key, files=(ManifestFile(path, CID, 1, SHA),), entry="model.onnx")
    with pytest.raises(ManifestError):
        sign_manifest(bad, key)  # we never sign it...
    body = bad.to_map()
    forged = cbor2.dumps({"manifest": body, "sig": key.sign(b"x")})
    with pytest.raises(ManifestError):  # ...and refuse it before looking at the signature
        verify(forged, key)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",
        cbor2.dumps([1]),
        cbor2.dumps({"manifest": {}, "sig": b"x"}),
        cbor2.dumps({"manifest": 1}),
    ],
)
def test_malformed_packages_are_refused(key: PublisherKey, raw: bytes) -> None:
    with pytest.raises(ManifestError):
        verify(raw, key)


def test_structural_checks(key: PublisherKey) -> None:
    for changes in (
        {"entry": "missing.onnx"},
        {"format": "pickle"},
        {"files": ()},
        {"files": (ManifestFile("a", CID, 1, SHA), ManifestFile("a", CID, 1, SHA)), "entry": "a"},
        {"files": (ManifestFile("model.onnx", "not-a-cid", 1, SHA),)},
        {"inputs": (TensorSpec("x", "complex128", (1,)),)},
        {"version": -1},
    ):
        with pytest.raises(ManifestError):
            sign_manifest(manifest(key, **changes), key)


def test_public_key_text_form(key: PublisherKey) -> None:
    text = format_public_key(key.public_key)
    assert text.startswith("ed25519:") and parse_public_key(text) == key.public_key
    for bad in ("ed25519:", "rsa:AAAA", "ed25519:!!!!", "ed25519:" + "A" * 10, 42):
        with pytest.raises(PublisherKeyError):
            parse_public_key(bad)  # type: ignore[arg-type]


def test_key_files_are_private(tmp_path: Path) -> None:
    files = KeyFiles(tmp_path / "keys")
    created = files.create("bob")
    assert (tmp_path / "keys" / "bob.key").stat().st_mode & 0o777 == 0o600
    assert files.load("bob").public_key == created.public_key
    with pytest.raises(PublisherKeyError, match="already exists"):
        files.create("bob")
    with pytest.raises(PublisherKeyError, match="invalid key name"):
        files.create("../escape")
