"""Publishing and fetching signed models.

Blocks live in the node's on-disk block store (``HOME/ipfs``), the verified cache of every model;
a content backend (:mod:`accel_node.models.backend`: Bitswap + DHT, or a Kubo node) moves them to
and from the network. A fetch is resumable: every verified block is stored as it arrives, and a
restarted fetch only asks for what is still missing. Its progress
(:mod:`accel_node.models.progress`) can be read while it runs.

Nothing is made loadable before everything checked out: the manifest is verified (size, structure,
trusted publisher, signature, expiry, rollback), every block against its CID, every file against
the manifest's size and sha256; only then are the files moved into ``HOME/models/<cid>/`` and the
model recorded. A refusal leaves no model files behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from accel_node.models.backend import BlockSource, ContentBackend
from accel_node.models.errors import InvalidModelCidError, ManifestError, ModelError, ModelNotFoundError
from accel_node.models.manifest import Manifest, ManifestFile, TensorSpec, sign_manifest, verify_package
from accel_node.models.progress import FetchProgress, FetchTracker, file_bytes, present_bytes
from accel_node.models.trust import TrustStore
from accel_node.store import AsyncStore, ModelRow
from p2p.content import CID, BlockStore, ContentError, export_file, import_bytes, import_file, read_bytes

log = logging.getLogger(__name__)

FETCH_BATCH = 1024  # blocks per request to the backend's source (which batches further)
ONNX_DTYPES = {  # onnx.TensorProto element types
    1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 8: "string", 9: "bool",
    10: "float16", 11: "float64", 16: "bfloat16",
}  # fmt: skip


BLOCK_OVERHEAD_BYTES = 64 * 1024  # allowance for dag-pb framing when a fetch is bounded


@dataclass(frozen=True)
class Limits:
    max_manifest_bytes: int
    max_file_bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_signature(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an ONNX model (names, dtypes, shapes with symbolic dims)."""
    import onnx  # heavy; only needed when publishing

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ManifestError(f"{path.name} is not a readable ONNX model: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}

    def specs(values: Any) -> tuple[TensorSpec, ...]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            dims: list[int | str | None] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
            ]
            out.append(TensorSpec(value.name, ONNX_DTYPES.get(tensor.elem_type, "float32"), tuple(dims)))
        return tuple(out)

    return specs(model.graph.input), specs(model.graph.output)


def model_files(directory: Path) -> list[str]:
    """The files a model directory publishes, as sorted POSIX paths relative to ``directory``.

    Hidden entries (a name starting with ``.``: ``.git``, ``.env``, editor files) are skipped, with
    everything under them: they are not part of a model and must not end up served to the network.
    A symbolic link anywhere is refused (it could point outside the directory, at a key or a
    token), and so is anything that is not a regular file or a directory (sockets, devices, pipes).
    Nothing is read or imported here: a refused directory leaves the block store untouched.
    """
    if directory.is_symlink() or not directory.is_dir():
        raise ManifestError(f"{directory} is not a directory")
    found: list[str] = []
    pending = [directory]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                relative = Path(entry.path).relative_to(directory).as_posix()
                if entry.is_symlink():
                    raise ManifestError(f"{relative} is a symbolic link; copy the file into the directory")
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    found.append(relative)
                else:
                    raise ManifestError(f"{relative} is not a regular file")
    if not found:
        raise ManifestError(f"{directory} holds no files")
    return sorted(found, key=lambda relative: relative.split("/"))  # the order of Path parts


class ModelService:
    """Publish, fetch, list and remove verified models."""

    def __init__(
        self,
        *,
        home: Path,
        store: AsyncStore,
        blocks: BlockStore,
        backend: ContentBackend,
        trust: TrustStore,
        limits: Limits,
    ) -> None:
        self.models_dir = home / "models"
        self._store = store
        self.blocks = blocks
        self.backend = backend
        self._trust = trust
        self._limits = limits
        self._fetch_locks: dict[str, trio.Lock] = {}
        self._content_pins: set[CID] = set()  # roots pinned by get_content (drop_content may unpin them)
        self.fetches = FetchTracker()

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, directory: Path, key_name: str, *, name: str | None, version: int | None,
                      ttl_s: float) -> dict[str, Any]:  # fmt: skip
        """Add every file of ``directory``, sign a manifest with key ``key_name``, publish it through
        the backend (for Kubo: put, pin, provide; if that fails nothing is recorded), install it."""
        key = self._trust.signing_key(key_name)
        directory = await trio.to_thread.run_sync(directory.resolve)
        # Everything is checked before the first byte enters the block store (which serves it).
        paths = await trio.to_thread.run_sync(model_files, directory)
        entries = [p for p in paths if p.endswith(".onnx")]
        if len(entries) != 1:
            raise ManifestError(f"{directory} must hold exactly one .onnx model, found {len(entries)}")
        inputs, outputs = await trio.to_thread.run_sync(onnx_signature, directory / entries[0])
        files = await trio.to_thread.run_sync(self._add_files, directory, paths)
        model_name = name or directory.name
        if version is None:
            highest = await self._store.highest_model_version(key.key_id, model_name)
            version = (highest or 0) + 1
        now = int(time.time())
        manifest = Manifest(
            name=model_name, version=version, format="onnx", entry=entries[0], files=tuple(files),
            inputs=inputs, outputs=outputs, created=now, expires=int(now + ttl_s), publisher=key.key_id,
        )  # fmt: skip
        package = sign_manifest(manifest, key)
        result, package_blocks = import_bytes(package)
        for block_cid, data in package_blocks.items():
            await trio.to_thread.run_sync(self.blocks.put, block_cid, data)
        cid = str(result.root)
        await self.backend.publish([result.root, *(CID.parse(f.cid) for f in manifest.files)])
        await self._install(cid, manifest, local=True)
        log.info("model published", extra={"cid": cid, "model": model_name, "version": version})
        return await self.show(cid)

    def _add_files(self, directory: Path, paths: list[str]) -> list[ManifestFile]:
        """Import the files :func:`model_files` listed (relative to ``directory``) into the block store."""
        files = []
        for relative in paths:
            path = directory / relative
            result = import_file(path, self.blocks.put)
            files.append(ManifestFile(relative, str(result.root), result.file_size, sha256_file(path)))
        return files

    # -- fetching ----------------------------------------------------------------------------

    async def fetch(self, cid_text: str) -> dict[str, Any]:
        """Fetch, verify and install the model named by ``cid_text`` (resumable)."""
        root = _parse_model_cid(cid_text)
        cid = str(root.to_v1())
        lock = self._fetch_locks.setdefault(cid, trio.Lock())
        async with lock:
            progress = self.fetches.begin(cid)
            await trio.to_thread.run_sync(self.blocks.pin, root)  # protects partial progress from gc
            try:
                source = await self.backend.source(root)
                progress.phase = "manifest"
                await self._fetch_dag(root, source, progress)
                package = await trio.to_thread.run_sync(
                    lambda: read_bytes(root, self.blocks.get, max_size=self._limits.max_manifest_bytes)
                )
                manifest = await self._verify(package)
                files = [(CID.parse(f.cid), f.size) for f in manifest.files]
                present = await trio.to_thread.run_sync(
                    lambda: [present_bytes(self.blocks, file_cid, size) for file_cid, size in files]
                )
                progress.start_files([size for _, size in files], present)
                for index, (file_cid, _) in enumerate(files):
                    progress.begin_file(index)
                    await self._fetch_dag(file_cid, source, progress)
                    progress.file_done(index)
                progress.phase = "verifying"
                await self._install(cid, manifest, local=False, progress=progress)
            except BaseException as exc:
                self.fetches.end(progress, str(exc) or type(exc).__name__)
                # Shielded: a cancelled fetch must still release its pin on a model it did not install.
                with trio.CancelScope(shield=True):
                    if not await self._installed(cid):
                        await trio.to_thread.run_sync(self.blocks.unpin, root)
                raise
            self.fetches.end(progress)
        await self.backend.announce([root, *(file_cid for file_cid, _ in files)])
        return await self.show(cid)

    async def _verify(self, package: bytes) -> Manifest:
        # The trust and version tables are small: read whole, then verify off the event loop.
        keys = await self._store.publisher_keys()
        versions = await self._store.model_versions()

        def verify() -> Manifest:
            return verify_package(
                package,
                trusted_key=keys.get,
                highest_version=lambda publisher, name: versions.get((publisher, name)),
                max_manifest_bytes=self._limits.max_manifest_bytes,
                max_file_bytes=self._limits.max_file_bytes,
            )

        return await trio.to_thread.run_sync(verify)

    async def _fetch_dag(
        self, root: CID, source: BlockSource, progress: FetchProgress, *, max_bytes: int | None = None
    ) -> None:
        """Fetch every missing block under ``root``, level by level. Each block is checked against
        its CID by the source and again by the block store, and stored at once (so a fetch resumes).
        With ``max_bytes``, a fetch that would store more block bytes than that fails."""
        stored_bytes = 0

        async def put(cid: CID, data: bytes) -> None:
            nonlocal stored_bytes
            stored_bytes += len(data)
            if max_bytes is not None and stored_bytes > max_bytes:
                raise ModelError(f"content {root} is larger than the {max_bytes} bytes allowed here")

            def store() -> tuple[bool, int]:
                # Every source verified the block against its CID on arrival: not hashed twice.
                return self.blocks.put(cid, data, verified=True), file_bytes(cid, data)

            try:
                stored, nbytes = await trio.to_thread.run_sync(store)
            except ContentError as exc:
                raise ModelError(f"storing block {cid} of {root} failed: {exc}") from exc
            if stored:
                progress.block_stored(nbytes)

        while missing := await trio.to_thread.run_sync(self.blocks.missing, root):
            for start in range(0, len(missing), FETCH_BATCH):
                await source.fetch(missing[start : start + FETCH_BATCH], put)

    # -- other content (shard plans, ...) ---------------------------------------------------------

    async def add_content(self, data: bytes) -> str:
        """Add ``data`` as pinned content, publish it through the backend; returns its CID."""
        result, blocks = import_bytes(data)

        def store() -> None:
            for block_cid, block in blocks.items():
                self.blocks.put(block_cid, block)
            self.blocks.pin(result.root)

        await trio.to_thread.run_sync(store)
        await self.backend.publish([result.root])
        return str(result.root)

    async def get_content(self, cid_text: str, *, max_size: int) -> bytes:
        """The bytes named by ``cid_text``: from the block store, else fetched (verified) and pinned.

        The fetch stores at most about ``max_size`` bytes of blocks (a DAG larger than that is
        abandoned as soon as it shows), and the root is pinned only once the DAG is complete and
        read back within ``max_size``: a failed or oversize fetch leaves nothing pinned (finding 9)."""
        root = _parse_model_cid(cid_text)
        budget = max_size + (max_size >> 4) + BLOCK_OVERHEAD_BYTES  # dag-pb framing on top of the data
        try:
            await self._fetch_dag(
                root, await self.backend.source(root), FetchProgress(str(root)), max_bytes=budget
            )
            data = await trio.to_thread.run_sync(lambda: read_bytes(root, self.blocks.get, max_size=max_size))
        except ContentError as exc:
            raise ModelError(f"content {root}: {exc}") from exc
        if await trio.to_thread.run_sync(self.blocks.pin, root):
            self._content_pins.add(root.to_v1())
        return data

    async def drop_content(self, cid_text: str) -> None:
        """Unpin content that :meth:`get_content` pinned and that turned out unusable (its blocks
        become collectable); content pinned for another reason (a model) keeps its pin."""
        root = _parse_model_cid(cid_text).to_v1()
        if root in self._content_pins:
            self._content_pins.discard(root)
            await trio.to_thread.run_sync(self.blocks.unpin, root)

    # -- installing and listing --------------------------------------------------------------

    async def _install(
        self, cid: str, manifest: Manifest, *, local: bool, progress: FetchProgress | None = None
    ) -> None:
        """Materialise verified files under HOME/models/<cid>/ and record the model."""
        target = self.models_dir / cid

        def materialise() -> None:
            staging = self.models_dir / f".{cid}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                for f in manifest.files:
                    dest = staging / f.path
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    size = export_file(CID.parse(f.cid), self.blocks.get, dest, max_size=f.size)
                    if size != f.size or sha256_file(dest) != f.sha256:
                        raise ManifestError(f"{f.path} does not match the manifest's size and sha256")
                    self.blocks.pin(CID.parse(f.cid))
                if progress is not None:
                    progress.phase = "installing"
                self.blocks.sync()  # blocks and files durable before the model becomes loadable
                shutil.rmtree(target, ignore_errors=True)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

        await trio.to_thread.run_sync(materialise)
        await trio.to_thread.run_sync(self.blocks.pin, CID.parse(cid))
        await self._store.record_model(
            cid,
            manifest.to_map(),
            local=local,
        )
        await self._store.record_model_version(manifest.publisher, manifest.name, manifest.version)

    async def _installed(self, cid: str) -> bool:
        return await self._store.get_model(cid) is not None

    async def list(self) -> list[dict[str, Any]]:
        return [self._view(row) for row in await self._store.list_models()]

    async def show(self, cid: str) -> dict[str, Any]:
        row = await self._store.get_model(normal_cid(cid))
        if row is None:
            raise ModelNotFoundError(f"no model {cid} on this node")
        return self._view(row)

    def _view(self, row: ModelRow) -> dict[str, Any]:
        return {
            **row.as_dict(),
            "path": str(self.models_dir / row.cid),
            "pinned": self.blocks.is_pinned(CID.parse(row.cid)),
        }

    async def remove(self, cid: str) -> dict[str, Any]:
        view = await self.show(cid)
        manifest = view["manifest"]

        def drop() -> None:
            for f in manifest["files"]:
                self.blocks.unpin(CID.parse(f["cid"]))
            self.blocks.unpin(CID.parse(view["cid"]))
            shutil.rmtree(self.models_dir / view["cid"], ignore_errors=True)
            self.blocks.gc()

        await self._store.delete_model(view["cid"])
        await trio.to_thread.run_sync(drop)
        return view

    async def pin(self, cid: str) -> dict[str, Any]:
        view = await self.show(cid)
        await trio.to_thread.run_sync(self.blocks.pin, CID.parse(view["cid"]))
        return await self.show(cid)


def local_block(blocks: BlockStore, cid_bytes: bytes) -> bytes | None:
    """Bitswap's view of the block store: the verified block, or None when absent or corrupt."""
    try:
        return blocks.get(CID.decode(cid_bytes))
    except ContentError:
        return None


def _parse_model_cid(text: str) -> CID:
    try:
        return CID.parse(text)
    except ContentError as exc:
        raise InvalidModelCidError(f"invalid model CID {text[:100]!r}: {exc}") from exc


def normal_cid(cid: str) -> str:
    """The canonical text of a model CID (CIDv1, base32); :class:`InvalidModelCidError` if it is not one."""
    return str(_parse_model_cid(cid).to_v1())
