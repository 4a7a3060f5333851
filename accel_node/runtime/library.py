"""Verified models as the runtime sees them: files, signatures, precision variants, analyses, benchmarks.

The model service verifies a model once, when it installs it; this library checks again, before a
session is created, that the entry file on disk still has the manifest's sha256 (a file changed
after install is refused with :class:`ModelNotVerified`, never loaded).

Precision variants are content-addressed like any model file: their bytes go into the block store
(pinned) and are named by their CID; the file the runtime loads is ``HOME/variants/<cid>.onnx``,
recorded in the store with its parent CID and the accuracy delta measured against the parent.

Every benchmark point and a sample of live batches become measurement records in the store, with
the hardware fingerprint of this machine, for the predictor and the tuner to learn from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from accel_node.hardware import HardwareService
from accel_node.models.analysis import analyse
from accel_node.models.errors import ModelNotFoundError
from accel_node.models.manifest import TensorSpec
from accel_node.models.service import ModelService, sha256_file
from accel_node.runtime.errors import ModelNotVerified, ModelUnavailable, VariantError
from accel_node.runtime.measure import bench
from accel_node.runtime.variants import accuracy_delta, build_variant
from accel_node.store import AsyncStore
from p2p.content import CID, import_bytes

log = logging.getLogger(__name__)

VARIANTS = ("int8", "fp16")


def _specs(entries: Sequence[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(e["name"], e["dtype"], tuple(e["shape"])) for e in entries)


class ModelLibrary:
    """Resolves CIDs to verified files for the inference service and derives data from them."""

    def __init__(
        self, *, home: Path, models: ModelService, store: AsyncStore, hardware: HardwareService
    ) -> None:
        self.variants_dir = home / "variants"
        self._models = models
        self._store = store
        self._hardware = hardware
        self._checked: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) verified
        self._build_locks: dict[tuple[str, str], trio.Lock] = {}

    # -- hooks of the inference service --------------------------------------------------------

    async def resolve(self, cid: str) -> tuple[Path, tuple[TensorSpec, ...]]:
        """The verified entry file of ``cid`` and its input signature."""
        view = await self._view(cid)
        manifest = view["manifest"]
        entry = next(f for f in manifest["files"] if f["path"] == manifest["entry"])
        path = Path(view["path"]) / manifest["entry"]
        await self._check_file(path, entry["sha256"], cid)
        return path, _specs(manifest["io"]["inputs"])

    async def variant_path(self, cid: str, variant: str) -> Path | None:
        row = await self._store.get_variant(await self._normal(cid), variant)
        if row is None:
            return None
        path = self._variant_file(row.cid)
        if not await trio.to_thread.run_sync(path.exists):
            return None
        return path

    async def record(self, measurement: dict[str, Any]) -> None:
        """Store a live measurement sampled by the inference service."""
        await self._store.record_measurements(
            [
                {
                    "model_cid": measurement["cid"],
                    "variant": measurement["variant"],
                    "batch": measurement["batch"],
                    "threads": measurement.get("threads"),
                    "seq_len": measurement.get("seq_len"),
                    "latency_ms": measurement["latency_ms"],
                    "throughput": measurement["throughput_items_s"],
                    "peak_rss_bytes": measurement.get("peak_rss_bytes"),
                    "fingerprint": self._hardware.fingerprint,
                    "source": "live",
                }
            ],
        )

    # -- derived data ------------------------------------------------------------------------

    async def analysis(self, cid: str, dims: dict[str, int]) -> dict[str, Any]:
        """The model's analysis at ``dims`` (computed once per dims, then read from the store)."""
        normal = await self._normal(cid)
        cached = await self._store.get_analysis(normal, dims)
        if cached is not None:
            return cached
        path, _ = await self.resolve(normal)
        result = await trio.to_thread.run_sync(lambda: analyse(path, dims or None).to_dict())
        await self._store.save_analysis(normal, dims, result)
        return result

    async def variants(self, cid: str) -> list[dict[str, Any]]:
        return [row.as_dict() for row in await self._store.list_variants(await self._normal(cid))]

    async def build_variant(self, cid: str, variant: str) -> dict[str, Any]:
        """Build (or return the already built) ``variant`` of ``cid`` with its measured accuracy."""
        if variant not in VARIANTS:
            raise VariantError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        normal = await self._normal(cid)
        async with self._build_locks.setdefault((normal, variant), trio.Lock()):
            if await self.variant_path(normal, variant) is not None:
                row = await self._store.get_variant(normal, variant)
                assert row is not None
                return row.as_dict()
            parent, signature = await self.resolve(normal)
            data = await trio.to_thread.run_sync(build_variant, parent, variant, signature)
            variant_cid = await trio.to_thread.run_sync(self._add_variant, data)
            path = self._variant_file(variant_cid)
            accuracy = await trio.to_thread.run_sync(accuracy_delta, parent, path, signature)
            await self._store.save_variant(
                variant_cid,
                parent=normal,
                variant=variant,
                accuracy=accuracy,
                size=len(data),
            )
            log.info("variant built", extra={"cid": normal, "variant": variant, "variant_cid": variant_cid})
            row = await self._store.get_variant(normal, variant)
            assert row is not None
            return row.as_dict()

    async def bench(
        self,
        cid: str,
        *,
        batches: Sequence[int],
        threads: Sequence[int],
        variants: Sequence[str],
        repeats: int,
        seq_len: int,
    ) -> list[dict[str, Any]]:
        """Sweep batches x threads x variants (building missing variants) and record every point."""
        normal = await self._normal(cid)
        path, signature = await self.resolve(normal)
        files: dict[str, Path] = {}
        for variant in variants:
            if variant == "fp32":
                files[variant] = path
            else:
                await self.build_variant(normal, variant)
                found = await self.variant_path(normal, variant)
                assert found is not None
                files[variant] = found
        points = await trio.to_thread.run_sync(
            lambda: bench(
                path,
                signature,
                batches=batches,
                threads=threads,
                variants=files,
                repeats=repeats,
                seq_len=seq_len,
                max_point_s=10.0,
            )
        )
        rows = [
            {
                "model_cid": normal,
                "variant": p["variant"],
                "batch": p["batch"],
                "threads": p["threads"],
                "seq_len": p.get("seq_len"),
                "latency_ms": p["latency_ms_p50"],
                "latency_p90_ms": p["latency_ms_p90"],
                "throughput": p["throughput_items_s"],
                "peak_rss_bytes": p["peak_rss_bytes"],
                "fingerprint": self._hardware.fingerprint,
                "source": "bench",
                "op_times": p.get("op_times"),
            }
            for p in points
        ]
        await self._store.record_measurements(rows)
        return points

    async def forget(self, cid: str) -> None:
        """Drop what was derived from a removed model (variant files, analyses)."""
        normal = await self._normal(cid)
        blocks = self._models.blocks

        def drop(variant_cid: str) -> None:
            self._variant_file(variant_cid).unlink(missing_ok=True)
            blocks.unpin(CID.parse(variant_cid))  # the model's removal collects the blocks

        for row in await self.variants(normal):
            await trio.to_thread.run_sync(drop, row["cid"])
        await self._store.delete_model_data(normal)

    # -- internals ---------------------------------------------------------------------------

    async def _view(self, cid: str) -> dict[str, Any]:
        try:
            return await self._models.show(cid)
        except ModelNotFoundError as exc:
            raise ModelUnavailable(str(exc)) from exc

    async def _normal(self, cid: str) -> str:
        return str((await self._view(cid))["cid"])

    async def _check_file(self, path: Path, sha256: str, cid: str) -> None:
        try:
            stat = await trio.to_thread.run_sync(os.stat, path)
        except FileNotFoundError as exc:
            raise ModelNotVerified(
                f"model {cid}: {path.name} is missing on disk; fetch the model again"
            ) from exc
        key = (stat.st_size, stat.st_mtime_ns)
        if self._checked.get(path) == key:
            return
        if await trio.to_thread.run_sync(sha256_file, path) != sha256:
            raise ModelNotVerified(
                f"model {cid}: {path.name} no longer matches its signed manifest; remove and fetch it again"
            )
        self._checked[path] = key

    def _variant_file(self, variant_cid: str) -> Path:
        return self.variants_dir / f"{variant_cid}.onnx"

    def _add_variant(self, data: bytes) -> str:
        blocks_store = self._models.blocks
        result, blocks = import_bytes(data)
        for block_cid, block in blocks.items():
            blocks_store.put(block_cid, block)
        blocks_store.pin(result.root)
        cid = str(CID.parse(str(result.root)).to_v1())
        target = self._variant_file(cid)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(".tmp")
        staging.write_bytes(data)
        os.replace(staging, target)
        return cid
