"""The transport seam of the data plane: what protocol code needs of a channel and of its opener.

Protocols above the bulk service (content blocks, shard messages) talk to these small interfaces, not to
a socket or to :class:`~p2p.bulk.service.BulkService`, so that the same code runs over a direct TCP
channel between hosts, over an in-memory pair (:mod:`p2p.bulk.memory`: tests, and calls to the node
itself) or over anything else that moves frames. The idea is httpcore's backend seam
(``NetworkStream``/``NetworkBackend`` with a mock backend for tests).

- :class:`FrameChannel`: one established channel: typed frames out and in, half-close, close.
- :class:`ChannelOpener`: opens a channel to a peer for a purpose, in a mode.
- :class:`ChannelAcceptor`: serves channels that peers open, one handler per purpose.
- :class:`ChannelTransport`: both, plus the addresses a peer needs to reach this node (advertised in
  requests that travel on, learnt from requests that arrive).

Implemented by :class:`~p2p.bulk.channel.Channel`, :class:`~p2p.bulk.service.BulkService` and
:class:`~p2p.bulk.memory.MemoryTransport`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2p.bulk.framing import Buffer, Frame
from p2p.bulk.handshake import Mode

DATA = 0
"""The default frame type; the meaning of types is up to each purpose's protocol."""


class FrameChannel(Protocol):
    """One side of an established channel to ``peer_id`` for ``purpose``.

    Sends raise :class:`~p2p.bulk.errors.FrameError` for a payload over the peer's limit and
    :class:`~p2p.bulk.errors.BulkError` when the channel broke; receives raise
    :class:`~p2p.bulk.errors.ChannelClosed` at a clean end and :class:`~p2p.bulk.errors.FrameError`
    for malformed or tampered input.
    """

    @property
    def peer_id(self) -> ID: ...
    @property
    def purpose(self) -> str: ...
    @property
    def mode(self) -> Mode: ...
    @property
    def encrypted(self) -> bool: ...
    @property
    def authenticated(self) -> bool:
        """Whether every received frame is proved to come from ``peer_id`` (an AEAD tag per frame):
        only then may a bad payload be held against the peer."""
        ...

    @property
    def last_activity(self) -> float:
        """trio time of the last frame sent or received (idle channels are closed by acceptors)."""
        ...

    @property
    def max_send_payload(self) -> int:
        """The largest payload the peer accepts in one frame."""
        ...

    async def send(self, payload: Buffer, *, frame_type: int = DATA) -> None: ...
    async def send_parts(self, parts: Sequence[Buffer], *, frame_type: int = DATA) -> None: ...
    async def send_eof(self) -> None: ...
    async def receive(self) -> Frame: ...
    async def receive_view(self) -> tuple[int, memoryview]:
        """The next frame without copying its payload: valid only until the next receive."""
        ...

    async def aclose(self) -> None: ...


Handler = Callable[[FrameChannel, ID], Awaitable[None]]
"""``await handler(channel, peer_id)`` serves one accepted channel; the channel closes when it returns."""


class ChannelOpener(Protocol):
    """Opens channels from ``local_id`` to peers."""

    @property
    def local_id(self) -> ID: ...

    def open(
        self, peer_id: ID, purpose: str, *, encrypted: bool = True, timeout_s: float = 10.0
    ) -> AbstractAsyncContextManager[FrameChannel]:
        """A channel to ``peer_id`` (``local_id`` included) for ``purpose``, closed when the block exits.
        Raises :class:`~p2p.bulk.errors.RefusedError` when refused, and
        :class:`~p2p.bulk.errors.HandshakeError` when it cannot be established within ``timeout_s``."""
        ...


class ChannelAcceptor(Protocol):
    """Serves the channels peers open, by purpose."""

    def set_handler(self, purpose: str, handler: Handler, *, require_encryption: bool = False) -> None: ...
    def remove_handler(self, purpose: str) -> None: ...


class ChannelTransport(ChannelOpener, ChannelAcceptor, Protocol):
    """Opens and accepts channels, and knows how peers reach each other."""

    def advertised_addrs(self) -> list[Multiaddr]:
        """Addresses at which peers can reach this node (put in requests that travel on)."""
        ...

    def learn_addrs(self, peer_id: ID, addrs: Sequence[Multiaddr]) -> None:
        """Remember ``addrs`` for ``peer_id`` (taken from an authenticated request) if none are known."""
        ...
