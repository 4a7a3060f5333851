"""What a fuzz target is, shared by the pytest harnesses (hypothesis) and ``scripts/fuzz.py`` (atheris).

A target is one decoder of bytes that come from the network, wrapped as ``fuzz_one(data: bytes) -> None``:
it feeds ``data`` to the decoder and swallows only the errors the decoder documents for malformed input
(``ShardWireError``, ``FrameError``, ``RecordError``, ...). Anything else that escapes (``KeyError``,
``TypeError``, a ``ValueError`` that is not the package's own, ``RecursionError``), a hang or unbounded
memory is a crash. ``seeds()`` gives valid encodings made by the project's own encoders, so that fuzzers
start from structure rather than from noise.

Targets are registered in :data:`TARGETS` by name (the targets_* modules register on import; import
:mod:`tests.fuzz.targets` for all of them).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

FuzzOne = Callable[[bytes], None]


@dataclass(frozen=True)
class Target:
    name: str
    fuzz_one: FuzzOne
    seeds: Callable[[], list[bytes]]
    max_len: int = 4096
    """Longest input worth generating (hypothesis ``max_size``, atheris ``-max_len``)."""


TARGETS: dict[str, Target] = {}


def target(
    name: str, seeds: Callable[[], list[bytes]], *, max_len: int = 4096
) -> Callable[[FuzzOne], FuzzOne]:
    """Register the decorated ``fuzz_one`` under ``name``."""

    def register(fuzz_one: FuzzOne) -> FuzzOne:
        assert name not in TARGETS, name
        TARGETS[name] = Target(name, fuzz_one, functools.cache(seeds), max_len)
        return fuzz_one

    return register


def accepting(*errors: type[BaseException]) -> contextlib.suppress:
    """The errors a decoder documents for malformed input: swallowed; everything else is a crash."""
    return contextlib.suppress(*errors)


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never really suspends (its stream is in memory) to completion, without trio."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the coroutine suspended: the fake stream must never block")


class MemoryStream:
    """A libp2p-like stream (``read``) and trio-like stream (``receive_some``) over fixed bytes,
    returning at most ``chunk`` bytes a call (so decoders see their input split)."""

    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = max(1, chunk)

    async def read(self, n: int | None = None) -> bytes:
        size = self._chunk if n is None or n < 0 else min(n, self._chunk)
        out = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(out)
        return out

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.read(max_bytes)


def chunks(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    """``data`` cut into pieces whose lengths cycle through ``sizes`` (a 0 counts as 1)."""
    pos, index = 0, 0
    while pos < len(data):
        size = max(1, sizes[index % len(sizes)]) if sizes else len(data)
        yield data[pos : pos + size]
        pos += size
        index += 1
