"""``models publish`` in process: what a model directory publishes, and that a refused directory
publishes (and imports into the served block store) nothing (issue 11, finding 10)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import onnx
import pytest
import trio
from onnx import TensorProto, helper
from trio_typing import TaskStatus

from accel_node.models.backend import BlockSource, ContentBackend
from accel_node.models.errors import ManifestError
from accel_node.models.keys import KeyFiles
from accel_node.models.service import Limits, ModelService, model_files
from accel_node.models.trust import TrustStore
from accel_node.store import AsyncStore
from accel_node.store.db import Database
from p2p.content import CID, BlockStore


class RecordingBackend(ContentBackend):
    """Publishing only records the roots (no network in these tests); fetching is not used."""

    name = "recording"

    def __init__(self) -> None:
        self.published: list[CID] = []

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def publish(self, roots: Sequence[CID]) -> None:
        self.published.extend(roots)

    async def announce(self, roots: Sequence[CID]) -> None:
        pass

    async def source(self, root: CID) -> BlockSource:
        raise AssertionError("these tests fetch nothing")


def identity_model(path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    onnx.save(helper.make_model(graph), str(path))


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[ModelService, BlockStore, RecordingBackend]]:
    store = AsyncStore(Database(tmp_path / "node.db"))
    blocks = BlockStore(tmp_path / "ipfs", max_bytes=1 << 30, fsync=False)
    trust = TrustStore(store, KeyFiles(tmp_path / "keys"))
    await trust.new_key("alice")
    backend = RecordingBackend()
    home = tmp_path / "home"
    home.mkdir()
    models = ModelService(
        home=home, store=store, blocks=blocks, backend=backend, trust=trust, limits=Limits(1 << 20, 1 << 30)
    )
    try:
        yield models, blocks, backend
    finally:
        await store.close()


def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    (directory / "sub").mkdir(parents=True)
    identity_model(directory / "model.onnx")
    (directory / "sub" / "vocab.txt").write_text("a b c")
    return directory


async def test_hidden_files_are_not_published(
    service: tuple[ModelService, BlockStore, RecordingBackend], tmp_path: Path
) -> None:
    models, _, backend = service
    directory = model_dir(tmp_path)
    (directory / ".env").write_text("TOKEN=secret")
    (directory / ".git").mkdir()
    (directory / ".git" / "config").write_text("[core]")
    (directory / "sub" / ".notes.swp").write_text("draft")
    assert model_files(directory) == ["model.onnx", "sub/vocab.txt"]
    shown = await models.publish(directory, "alice", name="m", version=None, ttl_s=3600)
    assert sorted(f["path"] for f in shown["manifest"]["files"]) == ["model.onnx", "sub/vocab.txt"]
    assert len(backend.published) == 3  # the package and its two files


@pytest.mark.parametrize("refusal", ["symlink", "symlinked dir", "two models", "fifo"])
async def test_a_refused_directory_imports_nothing(
    service: tuple[ModelService, BlockStore, RecordingBackend], tmp_path: Path, refusal: str
) -> None:
    models, blocks, backend = service
    directory = model_dir(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id.key").write_bytes(b"private key")
    if refusal == "symlink":
        (directory / "sub" / "zz-key").symlink_to(outside / "id.key")
    elif refusal == "symlinked dir":
        (directory / "zz").symlink_to(outside)
    elif refusal == "two models":
        identity_model(directory / "sub" / "other.onnx")
    else:
        os.mkfifo(directory / "sub" / "pipe")
    with pytest.raises(ManifestError):
        await models.publish(directory, "alice", name="m", version=None, ttl_s=3600)
    assert blocks.size() == 0 and backend.published == []
