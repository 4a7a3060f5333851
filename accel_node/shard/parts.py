"""Shard messages larger than a bulk channel's frame limit, sent in parts and reassembled (sans-IO).

A message that fits the peer's frame limit travels as one frame of type MSG; a larger one as FIRST,
MORE..., LAST, each frame full except the last. The first part starts with the message prefix (see
:mod:`accel_node.shard.wire`), so the receiver learns the total size before it buffers anything and
refuses a message over ``max_message_bytes`` at once. After an error inside a multi-part message,
:class:`Reassembler` skips the rest of that message (up to its LAST), so the channel stays usable. The
sender must not interleave the parts of two messages (:class:`~accel_node.shard.links.MessageChannel`
holds a lock per message).

Memory (issue 11, finding 8): a multi-part message is copied once, part by part, into one buffer of
its announced size (no list of parts joined at the end, which held it twice), and the tensors decoded
from it are views of that buffer. Before that buffer exists, ``budget(size)`` must grant the bytes
(the peer's share of ``shard.reassembly_bytes``, see :mod:`accel_node.shard.admission`); when it
does not, :class:`~accel_node.shard.errors.ReassemblyRefused` is raised (the sender is answered
``busy``) and the message is skipped like a malformed one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import cbor2
import numpy as np

from accel_node.shard.errors import ReassemblyRefused, ShardWireError
from accel_node.shard.wire import DEFAULT_LIMITS, MAGIC, PREFIX, REQUEST_ID_BYTES, Buffer, Encoded

# Frame types on a bulk channel (the channel's own framing carries type and length).
MSG, FIRST, MORE, LAST = 0x31, 0x32, 0x33, 0x34
FRAME_TYPES = (MSG, FIRST, MORE, LAST)


def split_frames(encoded: Encoded, max_payload: int) -> Iterator[tuple[int, list[memoryview]]]:
    """The frames (type, payload parts) that carry ``encoded`` through a channel whose frames hold at most
    ``max_payload`` bytes: one MSG frame when it fits, else FIRST, MORE..., LAST."""
    if max_payload < PREFIX.size:
        raise ValueError(f"frames of {max_payload} bytes cannot carry a message prefix")
    views = [memoryview(b).cast("B") for b in encoded.buffers if len(b)]
    if encoded.size <= max_payload:
        yield MSG, views
        return
    sent = 0
    parts: list[memoryview] = []
    room = max_payload
    for whole in views:
        rest = whole
        while len(rest):
            take = rest[:room]
            parts.append(take)
            rest = rest[len(take) :]
            room -= len(take)
            if room == 0:
                sent += max_payload
                yield (FIRST if sent == max_payload else LAST if sent == encoded.size else MORE), parts
                parts, room = [], max_payload
    if parts:
        yield LAST, parts


class Held(Protocol):
    """Bytes granted by a :data:`Budget`, given back once the message is complete or dropped."""

    def release(self) -> None: ...


Budget = Callable[[int], Held | None]
"""Grants the bytes of one message in parts (None: refused)."""


def peek_ids(first: bytes) -> tuple[bytes | None, int | None]:
    """The request id and tag in a first part, when its header is all there (never raises): a refused
    message can still be answered with a FAIL its sender matches."""
    try:
        _magic, header_len, _body_len = PREFIX.unpack_from(first)
        if PREFIX.size + header_len > len(first) or header_len > DEFAULT_LIMITS.max_header_bytes:
            return None, None
        header: Any = cbor2.loads(first[PREFIX.size : PREFIX.size + header_len])
    except Exception:  # anything malformed: nothing to peek
        return None, None
    if not isinstance(header, dict):
        return None, None
    rid, tag = header.get("r"), header.get("t")
    ok_rid = isinstance(rid, bytes) and len(rid) == REQUEST_ID_BYTES
    ok_tag = isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag < (1 << 63)
    return (rid if ok_rid else None), (tag if ok_tag else None)


class Reassembler:
    """Rebuilds messages from frames (MSG, or FIRST/MORE.../LAST), within ``max_message_bytes`` and
    the bytes ``budget`` grants (None: no budget beyond the size limit).

    :meth:`feed` returns a complete message's bytes (read-only) or None. Errors raise
    :class:`ShardWireError`; after an error inside a multi-part message the rest of it (up to its LAST)
    is skipped, then the next message is read normally.
    """

    def __init__(
        self, max_message_bytes: int = DEFAULT_LIMITS.max_message_bytes, *, budget: Budget | None = None
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.budget = budget
        self._buffer: np.ndarray[Any, Any] | None = None
        self._held: Held | None = None
        self._filled = 0
        self._total = 0
        self._skipping = False

    @property
    def assembling(self) -> bool:
        return self._buffer is not None

    @property
    def buffered(self) -> int:
        """Bytes held for the message being reassembled (its announced size)."""
        return 0 if self._buffer is None else self._total

    def close(self) -> None:
        """Drop a message half reassembled (the channel ended) and give its bytes back."""
        self._drop()

    def _drop(self) -> None:
        self._buffer = None
        if self._held is not None:
            self._held.release()
            self._held = None

    def _abort(self, message: str) -> ShardWireError:
        self._drop()
        self._skipping = True
        return ShardWireError(message)

    def feed(self, frame_type: int, payload: bytes) -> Buffer | None:
        if frame_type == MSG:
            self._skipping = False
            if self._buffer is not None:
                self._drop()
                raise ShardWireError("a new message began before the previous one ended")
            return payload
        if frame_type == FIRST:
            self._first(payload)
            return None
        if frame_type in (MORE, LAST):
            return self._part(frame_type == LAST, payload)
        raise ShardWireError(f"unexpected frame type {frame_type}")

    def _first(self, payload: bytes) -> None:
        self._skipping = False
        if self._buffer is not None:
            raise self._abort("a new message began before the previous one ended")
        if len(payload) < PREFIX.size:
            raise self._abort(f"first part of {len(payload)} bytes is shorter than the message prefix")
        magic, header_len, body_len = PREFIX.unpack_from(payload)
        total = PREFIX.size + header_len + body_len
        if magic != MAGIC:
            raise self._abort("not a shard message (bad magic)")
        if total > self.max_message_bytes:
            raise self._abort(f"message of {total} bytes > the limit of {self.max_message_bytes}")
        if total <= len(payload):
            raise self._abort(f"a {total}-byte message sent in parts has a {len(payload)}-byte first part")
        if self.budget is not None:
            held = self.budget(total)
            if held is None:
                self._skipping = True
                request_id, tag = peek_ids(payload)
                raise ReassemblyRefused(
                    f"no room to reassemble a message of {total} bytes now",
                    request_id=request_id,
                    tag=tag,
                )
            self._held = held
        buffer = np.empty(total, dtype=np.uint8)  # pages are touched as parts arrive, not before
        buffer[: len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        self._buffer, self._filled, self._total = buffer, len(payload), total

    def _part(self, last: bool, payload: bytes) -> Buffer | None:
        if self._buffer is None:
            if self._skipping:
                self._skipping = not last
                return None
            raise ShardWireError("a message part arrived without its first part")
        end = self._filled + len(payload)
        if not payload or end > self._total or (not last and end == self._total):
            self._drop()
            self._skipping = not last
            raise ShardWireError(f"empty or excess message part (the message has {self._total} bytes)")
        self._buffer[self._filled : end] = np.frombuffer(payload, dtype=np.uint8)
        self._filled = end
        if not last:
            return None
        buffer = self._buffer
        self._drop()
        if end != self._total:
            raise ShardWireError(f"message ended after {end} of {self._total} bytes")
        buffer.flags.writeable = False
        return buffer.data
