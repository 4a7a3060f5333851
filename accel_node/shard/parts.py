"""Shard messages larger than a bulk channel's frame limit, sent in parts and reassembled (sans-IO).

A message that fits the peer's frame limit travels as one frame of type MSG; a larger one as FIRST,
MORE..., LAST, each frame full except the last. The first part starts with the message prefix (see
:mod:`accel_node.shard.wire`), so the receiver learns the total size before it buffers anything and
refuses a message over ``max_message_bytes`` at once. After an error inside a multi-part message,
:class:`Reassembler` skips the rest of that message (up to its LAST), so the channel stays usable. The
sender must not interleave the parts of two messages (:class:`~accel_node.shard.links.MessageChannel`
holds a lock per message).
"""

from __future__ import annotations

from collections.abc import Iterator

from accel_node.shard.errors import ShardWireError
from accel_node.shard.wire import DEFAULT_LIMITS, MAGIC, PREFIX, Encoded

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


class Reassembler:
    """Rebuilds messages from frames (MSG, or FIRST/MORE.../LAST), within ``max_message_bytes``.

    :meth:`feed` returns a complete message's bytes or None. Errors raise :class:`ShardWireError`; after an
    error inside a multi-part message the rest of it (up to its LAST) is skipped, then the next message is
    read normally.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_LIMITS.max_message_bytes) -> None:
        self.max_message_bytes = max_message_bytes
        self._parts: list[bytes] | None = None
        self._filled = 0
        self._total = 0
        self._skipping = False

    @property
    def assembling(self) -> bool:
        return self._parts is not None

    def _abort(self, message: str) -> ShardWireError:
        self._parts = None
        self._skipping = True
        return ShardWireError(message)

    def feed(self, frame_type: int, payload: bytes) -> bytes | None:
        if frame_type == MSG:
            self._skipping = False
            if self._parts is not None:
                self._parts = None
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
        if self._parts is not None:
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
        self._parts, self._filled, self._total = [payload], len(payload), total

    def _part(self, last: bool, payload: bytes) -> bytes | None:
        if self._parts is None:
            if self._skipping:
                self._skipping = not last
                return None
            raise ShardWireError("a message part arrived without its first part")
        self._filled += len(payload)
        if not payload or self._filled > self._total or (not last and self._filled == self._total):
            self._parts = None
            self._skipping = not last
            raise ShardWireError(f"empty or excess message part (the message has {self._total} bytes)")
        self._parts.append(payload)
        if not last:
            return None
        parts, self._parts = self._parts, None
        if self._filled != self._total:
            raise ShardWireError(f"message ended after {self._filled} of {self._total} bytes")
        return b"".join(parts)
