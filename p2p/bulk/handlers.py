"""The handler table of a channel acceptor: which purposes are served, whether a channel may be
opened, and running a handler so that its failure ends its channel and nothing else.

Shared by :class:`~p2p.bulk.service.BulkService` (channels over TCP, and to itself) and
:class:`~p2p.bulk.memory.MemoryTransport`, so that both refuse and serve channels alike, and close a
served channel that carried no frame either way for ``idle_timeout_s`` (a peer must not park
channels forever; a handler stuck sending to a peer that never reads counts as idle too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID

from p2p.bulk.handshake import Mode, check_purpose
from p2p.bulk.seam import FrameChannel, Handler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    handler: Handler
    require_encryption: bool


def describe(exc: BaseException) -> str:
    """The first leaf of an exception (group): py-libp2p's deep groups hide their cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


class HandlerTable:
    """Handlers by purpose, and the count of channels they are serving."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self.active_channels = 0

    def set(self, purpose: str, handler: Handler, *, require_encryption: bool = False) -> None:
        self._routes[check_purpose(purpose)] = Route(handler, require_encryption)

    def remove(self, purpose: str) -> None:
        self._routes.pop(purpose, None)

    def get(self, purpose: str) -> Route | None:
        return self._routes.get(purpose)

    def refusal(self, purpose: str, mode: Mode) -> str | None:
        """Why a channel for ``purpose`` in ``mode`` is refused, or None when it may be opened."""
        route = self._routes.get(purpose)
        if route is None:
            return f"no handler for purpose {purpose!r}"
        if route.require_encryption and mode != "encrypted":
            return f"purpose {purpose!r} requires an encrypted channel"
        return None

    async def serve(
        self,
        route: Route,
        channel: FrameChannel,
        peer_id: ID,
        *,
        idle_timeout_s: float | None = None,
        on_idle: Callable[[], object] | None = None,
    ) -> None:
        """Run ``route``'s handler on ``channel``, then close it; a handler's failure is logged, never
        raised (it ends its channel, not the service). With ``idle_timeout_s`` the handler is
        cancelled (``on_idle()`` hears of it) once the channel has been idle that long."""
        self.active_channels += 1
        try:
            async with trio.open_nursery() as nursery:
                if idle_timeout_s is not None:
                    nursery.start_soon(
                        _close_when_idle, channel, idle_timeout_s, nursery.cancel_scope, on_idle
                    )
                await route.handler(channel, peer_id)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            log.info(
                "bulk handler failed",
                extra={"purpose": channel.purpose, "peer_id": str(peer_id), "error": describe(exc)},
            )
        finally:
            self.active_channels -= 1
            with trio.CancelScope(shield=True):
                await channel.aclose()


async def _close_when_idle(
    channel: FrameChannel, idle_s: float, scope: trio.CancelScope, on_idle: Callable[[], object] | None
) -> None:
    # Sleeps until the idle deadline, which each frame moves: one wake-up per idle_s at most.
    while (deadline := channel.last_activity + idle_s) > trio.current_time():  # noqa: ASYNC110
        await trio.sleep_until(deadline)
    log.info("closing an idle bulk channel", extra={"purpose": channel.purpose, "idle_s": idle_s})
    if on_idle is not None:
        on_idle()
    scope.cancel()
