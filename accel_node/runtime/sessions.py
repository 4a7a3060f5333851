"""ONNX Runtime sessions and the LRU cache that keeps them within a memory budget.

Providers: ``CUDAExecutionProvider`` first when this onnxruntime build has it, then the CPU
provider (ORT places each node on the first provider that supports it).

Memory estimate of a session (what the budget counts): the process RSS measured just before and
just after creating it, and at least the model file's size:
``max(rss_after - rss_before, file_bytes)``. Sessions are created one at a time (a lock) so two
loads do not count each other's growth; inference running in other threads at the same time can
still move RSS either way, and memory freed by an earlier eviction may be reused without RSS
growing, which is why the file size is the floor. GPU memory is not counted. A session larger than
the whole budget is still admitted, alone (a model that fits nowhere else must still be servable).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import trio

from accel_node.runtime.errors import InferenceFailed, ModelUnavailable

log = logging.getLogger(__name__)

# onnxruntime ships no type information: loaded through importlib, typed Any (as in accel_node.profile).
ort: Any = importlib.import_module("onnxruntime")

GraphOptimization = Literal["disable", "basic", "extended", "all"]
GRAPH_OPTIMIZATION: dict[str, Any] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_providers() -> list[str]:
    """Execution providers to ask for, best first: CUDA when this build has it, then CPU."""
    have = ort.get_available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in have]
    return [*chosen, "CPUExecutionProvider"]


def session_options(
    *, intra_op_threads: int = 0, inter_op_threads: int = 0, graph_optimization: str = "all"
) -> Any:
    """Session options; 0 threads means ORT's default (one per physical core).

    Inter-op threads only matter in ORT's parallel execution mode, which is chosen when more than
    one is asked for.
    """
    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"graph optimisation must be one of {sorted(GRAPH_OPTIMIZATION)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    if inter_op_threads > 1:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    options.graph_optimization_level = GRAPH_OPTIMIZATION[graph_optimization]
    options.log_severity_level = 3  # errors only; ORT warns about every unused initializer otherwise
    # ORT's idle intra-op threads otherwise spin after every run: measured here, one 0.1 ms CNN run
    # burnt ~50 ms of CPU in the next ~100 ms, which starves the event loop and the other sessions.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(
    path: Path,
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    graph_optimization: str = "all",
    providers: Sequence[str] | None = None,
) -> Any:
    """A session for the model at ``path`` (blocking: call it from a worker thread)."""
    options = session_options(
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        graph_optimization=graph_optimization,
    )
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=list(providers or available_providers())
        )
    except Exception as exc:  # ORT raises its own pybind exception types (Fail, InvalidGraph, ...)
        raise InferenceFailed(f"ONNX Runtime cannot load {path.name}: {exc}") from exc


@dataclass(frozen=True)
class SessionKey:
    cid: str
    variant: str
    intra_op_threads: int
    inter_op_threads: int
    graph_optimization: str


@dataclass
class CachedSession:
    key: SessionKey
    path: Path
    session: Any  # onnxruntime.InferenceSession
    output_names: list[str]
    estimated_bytes: int
    rss_delta_bytes: int
    file_bytes: int
    load_s: float
    providers: list[str] = field(default_factory=list)

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run the model (blocking; ORT releases the GIL while it computes)."""
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds), strict=True))

    def describe(self) -> dict[str, Any]:
        return {
            "cid": self.key.cid,
            "variant": self.key.variant,
            "intra_op_threads": self.key.intra_op_threads,
            "inter_op_threads": self.key.inter_op_threads,
            "graph_optimization": self.key.graph_optimization,
            "estimated_bytes": self.estimated_bytes,
            "rss_delta_bytes": self.rss_delta_bytes,
            "file_bytes": self.file_bytes,
            "load_s": self.load_s,
            "providers": self.providers,
        }


class SessionCache:
    """Sessions by :class:`SessionKey`, least recently used evicted beyond ``budget_bytes``."""

    def __init__(self, budget_bytes: int, *, providers: Sequence[str] | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._providers = list(providers) if providers else None
        self._entries: OrderedDict[SessionKey, CachedSession] = OrderedDict()
        self._create_lock = trio.Lock()  # one load at a time: same-key waiters share it, RSS stays clean
        self.loads = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def used_bytes(self) -> int:
        return sum(e.estimated_bytes for e in self._entries.values())

    def entries(self) -> list[CachedSession]:
        """Cached sessions, least recently used first."""
        return list(self._entries.values())

    async def get(self, key: SessionKey, path: Path) -> CachedSession:
        """The session for ``key``, loading ``path`` off the event loop if it is not cached.

        Concurrent callers for one key load it once. A cancelled caller does not waste a load:
        the load finishes (shielded) and stays cached.
        """
        entry = self._hit(key)
        if entry is not None:
            return entry
        async with self._create_lock:
            entry = self._hit(key)
            if entry is not None:
                return entry
            try:
                file_bytes = (await trio.to_thread.run_sync(os.stat, path)).st_size
            except OSError as exc:
                raise ModelUnavailable(f"model file of {key.cid} ({key.variant}) is missing: {exc}") from exc
            self._evict_to(self.budget_bytes - file_bytes)  # room for at least the file
            with trio.CancelScope(shield=True):
                entry = await trio.to_thread.run_sync(self._load, key, path, file_bytes)
            self._entries[key] = entry
            self.loads += 1
            self._evict_to(self.budget_bytes, keep=key)
            log.info("inference session loaded", extra=entry.describe())
            return entry

    def _hit(self, key: SessionKey) -> CachedSession | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _load(self, key: SessionKey, path: Path, file_bytes: int) -> CachedSession:
        process = psutil.Process()
        before = process.memory_info().rss
        started = time.perf_counter()
        session = create_session(
            path,
            intra_op_threads=key.intra_op_threads,
            inter_op_threads=key.inter_op_threads,
            graph_optimization=key.graph_optimization,
            providers=self._providers,
        )
        load_s = time.perf_counter() - started
        delta = process.memory_info().rss - before
        return CachedSession(
            key=key,
            path=path,
            session=session,
            output_names=[o.name for o in session.get_outputs()],
            estimated_bytes=max(delta, file_bytes),
            rss_delta_bytes=delta,
            file_bytes=file_bytes,
            load_s=load_s,
            providers=session.get_providers(),
        )

    def _evict_to(self, budget: int, *, keep: SessionKey | None = None) -> None:
        """Drop least recently used sessions until the rest fit ``budget`` (``keep`` stays)."""
        for key in list(self._entries):
            if self.used_bytes <= budget:
                return
            if key == keep:
                continue
            entry = self._entries.pop(key)
            self.evictions += 1
            log.info("inference session evicted", extra=entry.describe())

    def resize(self, budget_bytes: int) -> None:
        """Change the budget, evicting least recently used sessions beyond it."""
        self.budget_bytes = budget_bytes
        self._evict_to(budget_bytes)

    def drop(self, cid: str | None = None, variant: str | None = None) -> int:
        """Forget the sessions of model ``cid`` (all models when None), of one ``variant`` if given."""
        keys = [
            k
            for k in self._entries
            if (cid is None or k.cid == cid) and (variant is None or k.variant == variant)
        ]
        for key in keys:
            del self._entries[key]
        return len(keys)
