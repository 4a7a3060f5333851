"""Benchmark sweeps: latency, throughput and memory of a model over batch sizes, threads, variants.

One record per (variant, threads, batch): ``warmup`` untimed runs, then ``repeats`` timed runs of
the same :func:`~accel_node.runtime.synthetic.random_inputs` batch (the generator variants use for
their accuracy batch) on a session created with those threads.

- latency: wall time of ``session.run`` (``time.perf_counter``), p50/p90/mean in ms;
- throughput: items (rows) per second = batch x repeats / total timed wall time;
- peak RSS: the process's resident set size, sampled by a background thread every
  ``RSS_SAMPLE_S`` with psutil (plus once before and after) while the point runs; it is the whole
  process (the session, the inputs, anything else alive), and spikes shorter than the sampling
  period can be missed.

Threads 0 mean ORT's default (one intra-op thread per physical core) and are recorded as that
number. A model whose first input dim is static runs at that batch only. ``bench`` blocks: call it
from a worker thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import psutil

from accel_node.runtime.sessions import create_session
from accel_node.runtime.synthetic import random_inputs
from accel_node.runtime.validation import Signature, is_static

RSS_SAMPLE_S = 0.002
DEFAULT_SEQ_LEN = 128


class RssSampler:
    """Peak RSS of this process while the ``with`` block runs (sampled; see module docstring)."""

    def __init__(self, period_s: float = RSS_SAMPLE_S) -> None:
        self._period_s = period_s
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self.peak_bytes = 0

    def _sample(self) -> None:
        while not self._stop.wait(self._period_s):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self.peak_bytes = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)


def default_threads() -> int:
    """What ORT's default of 0 intra-op threads means: one per physical core."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def uses_seq_len(signature: Signature) -> bool:
    return any(not is_static(d) for spec in signature for d in spec.shape[1:])


def bench(
    model_path: Path,
    signature: Signature,
    *,
    batches: Sequence[int] = (1,),
    threads: Sequence[int] = (0,),
    variants: Mapping[str, Path] | None = None,
    repeats: int = 20,
    warmup: int = 3,
    seq_len: int = DEFAULT_SEQ_LEN,
    graph_optimization: str = "all",
    seed: int = 0,
    providers: Sequence[str] | None = None,
    max_point_s: float | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Sweep ``variants`` (name -> model file; default ``{"fp32": model_path}``) x ``threads`` x
    ``batches`` and return one record per point (also passed to ``on_record`` as it is made).

    ``max_point_s`` stops a point's timed runs early once that much time was spent (after at least
    three runs), so a sweep over a large model stays bounded.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    chosen = dict(variants) if variants is not None else {"fp32": model_path}
    first = signature[0].shape[0] if signature and signature[0].shape else None
    sizes = [first] if isinstance(first, int) and first > 0 else list(dict.fromkeys(batches))
    recorded_seq = seq_len if uses_seq_len(signature) else None
    records = []
    for variant, path in chosen.items():
        for thread_count in threads:
            started = time.perf_counter()
            session = create_session(
                path,
                intra_op_threads=thread_count,
                graph_optimization=graph_optimization,
                providers=providers,
            )
            load_s = time.perf_counter() - started
            names = [o.name for o in session.get_outputs()]
            for batch in sizes:
                feeds = random_inputs(signature, batch=batch, seq_len=seq_len, seed=seed)
                rows = next(iter(feeds.values())).shape[0] if feeds and next(iter(feeds.values())).ndim else 1
                with RssSampler() as rss:
                    for _ in range(warmup):
                        session.run(names, feeds)
                    latencies = []
                    point_started = time.perf_counter()
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        session.run(names, feeds)
                        latencies.append(time.perf_counter() - t0)
                        if (
                            max_point_s is not None
                            and len(latencies) >= 3
                            and time.perf_counter() - point_started > max_point_s
                        ):
                            break
                    total_s = time.perf_counter() - point_started
                lat_ms = np.asarray(latencies) * 1000
                record = {
                    "variant": variant,
                    "batch": int(rows),
                    "threads": thread_count or default_threads(),
                    "seq_len": recorded_seq,
                    "repeats": len(latencies),
                    "latency_ms_p50": float(np.percentile(lat_ms, 50)),
                    "latency_ms_p90": float(np.percentile(lat_ms, 90)),
                    "latency_ms_mean": float(lat_ms.mean()),
                    "throughput_items_s": rows * len(latencies) / total_s if total_s > 0 else 0.0,
                    "peak_rss_bytes": rss.peak_bytes,
                    "load_s": load_s,
                    "graph_optimization": graph_optimization,
                    "providers": session.get_providers(),
                }
                records.append(record)
                if on_record is not None:
                    on_record(record)
            del session
    return records
