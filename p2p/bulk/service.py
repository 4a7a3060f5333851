"""The bulk service: direct TCP channels between libp2p-authenticated peers.

py-libp2p streams (Noise + yamux) carry 100-160 MB/s on loopback here, about 1/20 of a raw socket,
so model blocks and activations travel on a separate TCP connection whose endpoint and secret are
agreed over ``/accel/bulk/2.0.0``, an ordinary (Noise-authenticated) libp2p stream. The protocol is
in :mod:`p2p.bulk.handshake`; this module runs it:

- server: grants tickets on the libp2p protocol for purposes that have a handler, accepts TCP
  connections on its port, redeems the ticket within ``handshake_timeout_s`` (or closes the socket)
  and runs ``handler(channel, peer_id)`` in its own nursery; a failing handler is logged, never
  fatal to the service. Everything a peer can hold is bounded (:mod:`p2p.bulk.limits`): pending
  handshakes per remote IP and in total (a connection over the bound is closed at once), tickets
  and channels per peer and in total (refused with "busy"), idle channels closed. Refusals are
  reported to ``events``.
- client: :meth:`BulkService.open` asks the peer for a ticket, dials the TCP port at the IP the
  libp2p connection already reaches the peer at, proves the ticket, checks the server's proof and
  yields the :class:`~p2p.bulk.channel.Channel` (:mod:`p2p.bulk.dialer`). A channel to the node
  itself is an in-memory pair (:func:`~p2p.bulk.memory.memory_channel_pair`: same framing, no
  socket, no ticket) served by the same handlers, so callers need no special case for their own
  peer id.

:class:`BulkService` is a :class:`~p2p.bulk.seam.ChannelTransport`; protocol code should depend on
that interface, so that tests can run it on :class:`~p2p.bulk.memory.MemoryTransport`.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from trio_typing import TaskStatus

from p2p.bulk.channel import Channel
from p2p.bulk.dialer import PROTOCOL_ID, Dialer
from p2p.bulk.endpoints import bindable, ips_of, read_control, read_exactly
from p2p.bulk.errors import BulkError, HandshakeError, RefusedError
from p2p.bulk.framing import (
    AES_256_GCM,
    CIPHERS,
    DEFAULT_MAX_PAYLOAD,
    FrameDecoder,
    FrameEncoder,
    check_max_payload,
)
from p2p.bulk.handlers import HandlerTable, Route, describe
from p2p.bulk.handshake import (
    HELLO_SIZE,
    ChannelRequest,
    Mode,
    Refusal,
    TicketBook,
    TicketGrant,
    Transcript,
    check_client_mac,
    check_purpose,
    choose_cipher,
    derive_keys,
    encode_response,
    new_nonce,
    parse_client_hello,
    server_reply,
)
from p2p.bulk.limits import CHANNELS, PENDING_HANDSHAKES, BulkLimits, EventReporter, ip_scope
from p2p.bulk.memory import memory_channel_pair
from p2p.bulk.seam import FrameChannel, Handler
from p2p.events import LIMIT, REFUSED, EventSink, drop
from p2p.host import listening_addrs
from p2p.resources import Reservation, ResourceLimitExceeded, ResourceManager
from p2p.tasks import FailureHook, OwnedTasks

__all__ = ["PROTOCOL_ID", "BulkService"]

log = logging.getLogger(__name__)

ADDR_TTL_S = 600
"""How long addresses learnt from requests (:meth:`BulkService.learn_addrs`) stay in the peerstore."""
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class BulkService:
    """Grants, accepts and opens bulk channels for ``host``; see the module docstring.

    ``listen_ips`` default to the IPs of the host's listen addresses (``0.0.0.0`` stays a wildcard):
    the bulk port is exactly as reachable as the libp2p one, and bounded before authentication by
    ``limits`` (:class:`~p2p.bulk.limits.BulkLimits`). All are bound on one port (``port=0``: a
    random free one). ``max_payload`` is the largest frame payload this side accepts (the peer
    learns it in the handshake). The keyword limits (``handshake_timeout_s``, ``ticket_ttl_s``,
    ``max_*``, ``idle_timeout_s``), when given, override the fields of ``limits``. ``resources``
    holds the accounts (``bulk.*``; a fresh manager by default); refusals go to ``events``.

    Owns, while :meth:`run` runs: the accept loops (a failure there stops the service), one task
    per accepted connection (handshake, then its handler) and one per loopback channel's far end;
    a failure in those is logged and passed to ``on_failure(service, task, exc)``.
    """

    def __init__(
        self,
        host: IHost,
        *,
        listen_ips: Sequence[str] | None = None,
        port: int = 0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        ciphers: Sequence[str] = CIPHERS,
        limits: BulkLimits | None = None,
        ticket_ttl_s: float | None = None,
        handshake_timeout_s: float | None = None,
        max_pending_handshakes: int | None = None,
        max_pending_handshakes_per_ip: int | None = None,
        max_channels: int | None = None,
        max_channels_per_peer: int | None = None,
        max_tickets: int | None = None,
        max_tickets_per_peer: int | None = None,
        idle_timeout_s: float | None = None,
        resources: ResourceManager | None = None,
        events: EventSink = drop,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.host = host
        self.max_payload = check_max_payload(max_payload)
        overrides: dict[str, Any] = {
            "ticket_ttl_s": ticket_ttl_s,
            "handshake_timeout_s": handshake_timeout_s,
            "pending_handshakes": max_pending_handshakes,
            "pending_handshakes_per_ip": max_pending_handshakes_per_ip,
            "channels": max_channels,
            "channels_per_peer": max_channels_per_peer,
            "tickets": max_tickets,
            "tickets_per_peer": max_tickets_per_peer,
            "idle_timeout_s": idle_timeout_s,
        }
        base = limits or BulkLimits()
        given = {k: v for k, v in overrides.items() if v is not None}
        for per, total in (
            ("pending_handshakes_per_ip", "pending_handshakes"),
            ("channels_per_peer", "channels"),
            ("tickets_per_peer", "tickets"),
        ):
            if total in given and per not in given:  # a smaller total given alone caps the share too
                given[per] = min(getattr(base, per), given[total])
        self.limits = dataclasses.replace(base, **given)
        unknown = [c for c in ciphers if c not in CIPHERS]
        if unknown or not ciphers:
            raise ValueError(f"ciphers must be a non-empty subset of {CIPHERS}, got {list(ciphers)}")
        self.ciphers = tuple(ciphers)
        self.resources = resources if resources is not None else ResourceManager()
        self.limits.declare(self.resources)
        self.events = events
        self._report = EventReporter(events, protocol="bulk")
        self._listen_ips = list(listen_ips) if listen_ips is not None else None
        self._requested_port = port
        self._tickets = TicketBook(
            ttl_s=self.limits.ticket_ttl_s,
            max_per_peer=self.limits.tickets_per_peer,
            max_total=self.limits.tickets,
            resources=self.resources,
        )
        self._handlers = HandlerTable()
        self._dialer = Dialer(host, ciphers=self.ciphers, max_payload=self.max_payload, events=events)
        self._tasks = OwnedTasks("bulk", on_failure=on_failure)
        self._port = 0
        self.refused_connections = 0
        self.idle_closed = 0
        self.loopback_channels = 0

    @property
    def handshake_timeout_s(self) -> float:
        return self.limits.handshake_timeout_s

    # -- configuration --------------------------------------------------------------------------

    def set_handler(self, purpose: str, handler: Handler, *, require_encryption: bool = False) -> None:
        """Serve channels opened for ``purpose`` with ``await handler(channel, peer_id)``.

        The channel is closed when the handler returns. ``require_encryption`` refuses ``plain``
        channels (authenticated, not encrypted) for this purpose (activations, anything private).
        """
        self._handlers.set(purpose, handler, require_encryption=require_encryption)

    def remove_handler(self, purpose: str) -> None:
        self._handlers.remove(purpose)

    @property
    def local_id(self) -> ID:
        return self.host.get_id()

    @property
    def active_channels(self) -> int:
        """Channels being served by a handler (TCP and loopback)."""
        return self._handlers.active_channels

    def advertised_addrs(self) -> list[Multiaddr]:
        """The host's listen addresses (wildcards expanded): where peers dial this node."""
        return listening_addrs(self.host)

    def learn_addrs(self, peer_id: ID, addrs: Sequence[Multiaddr]) -> None:
        """Put ``addrs`` in the peerstore for ``peer_id`` unless it already has some (or is us)."""
        if not addrs or peer_id == self.local_id:
            return
        peerstore: Any = self.host.get_peerstore()
        try:
            known = peerstore.addrs(peer_id)
        except Exception:  # py-libp2p raises PeerStoreError for unknown peers
            known = []
        if not known:
            peerstore.add_addrs(peer_id, list(addrs), ADDR_TTL_S)

    @property
    def port(self) -> int:
        """The TCP port channels are accepted on (0 until :meth:`run` has started)."""
        return self._port

    # -- server ---------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; reports the TCP port once ready. Start it after the host."""
        listeners = await self._listen()
        try:
            async with self._tasks.open(), trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(self._accept_loop, listener)
                self.host.set_stream_handler(PROTOCOL_ID, self._handle_request)
                log.info("bulk channels listening", extra={"port": self._port})
                task_status.started(self._port)
                await trio.sleep_forever()
        finally:
            self._port = 0
            self.host.remove_stream_handler(PROTOCOL_ID)
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    async def _listen(self) -> list[trio.SocketListener]:
        ips = bindable(
            self._listen_ips if self._listen_ips is not None else ips_of(self.host.get_transport_addrs())
        )
        if not ips:
            raise BulkError("no IP address to listen on (the host has no ip4/ip6 listen address)")
        for _attempt in range(5):
            listeners: list[trio.SocketListener] = []
            port = self._requested_port
            try:
                for ip in ips:
                    listeners += await trio.open_tcp_listeners(port, host=ip)
                    port = listeners[0].socket.getsockname()[1]
            except OSError as exc:
                for listener in listeners:
                    await listener.aclose()
                if self._requested_port or exc.errno != errno.EADDRINUSE:
                    raise BulkError(f"cannot listen for bulk channels on {ips} port {port}: {exc}") from exc
                continue  # the random port of the first IP is taken on another: try another one
            self._port = port
            return listeners
        raise BulkError(f"could not find one free port on all of {ips}")

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                log.warning("bulk accept failed; retrying", extra={"error": str(exc)})
                await trio.sleep(0.1)
                continue
            try:
                ip = str(stream.socket.getpeername()[0])
            except OSError:  # already gone
                await stream.aclose()
                continue
            try:
                pending = self.resources.reserve(PENDING_HANDSHAKES, ip_scope(ip))
            except ResourceLimitExceeded as exc:
                self.refused_connections += 1
                self._report.report(LIMIT, ip_scope(ip), str(exc), ip=ip, resource=exc.resource)
                await stream.aclose()
                continue
            self._tasks.spawn("connection", self._serve_connection, stream, ip, pending)

    async def _serve_connection(self, stream: trio.SocketStream, ip: str, pending: Reservation) -> None:
        accepted: tuple[Channel, Route, Reservation] | None = None
        try:
            with trio.move_on_after(self.limits.handshake_timeout_s):
                accepted = await self._accept_handshake(stream)
            if accepted is None:
                self._refuse_connection(
                    ip, f"handshake not completed in {self.limits.handshake_timeout_s:g} s"
                )
        except Exception as exc:  # refused ticket, broken socket, ...: drop it, keep serving
            self._refuse_connection(ip, describe(exc))
        finally:
            pending.release()
        if accepted is None:
            await stream.aclose()
            return
        channel, route, held = accepted
        peer = str(channel.peer_id)

        def idle() -> None:
            self.idle_closed += 1
            self._report.report(
                REFUSED, f"idle:{peer}", "idle bulk channel closed", peer=peer, purpose=channel.purpose
            )

        with held:
            await self._handlers.serve(
                route, channel, channel.peer_id, idle_timeout_s=self.limits.idle_timeout_s, on_idle=idle
            )

    def _refuse_connection(self, ip: str, reason: str) -> None:
        self.refused_connections += 1
        log.info("bulk handshake refused", extra={"ip": ip, "error": reason})
        self._report.report(REFUSED, ip_scope(ip), f"bulk handshake refused: {reason}", ip=ip)

    async def _accept_handshake(self, stream: trio.SocketStream) -> tuple[Channel, Route, Reservation]:
        ticket_id, client_nonce, mac = parse_client_hello(await read_exactly(stream, HELLO_SIZE))
        ticket = self._tickets.redeem(ticket_id, trio.current_time())
        route = self._handlers.get(ticket.purpose)
        if route is None:
            raise HandshakeError(f"purpose {ticket.purpose!r} is no longer served")
        transcript = Transcript(
            ticket_id=ticket_id,
            server=self.host.get_id().to_bytes(),
            client=ticket.client,
            purpose=ticket.purpose,
            mode=ticket.mode,
            cipher=ticket.cipher,
            client_nonce=client_nonce,
        )
        check_client_mac(ticket.secret, transcript, mac)
        peer = ID(ticket.client)
        try:  # the grant checked this too, but several grants may have raced to here
            held = self.resources.reserve(CHANNELS, str(peer))
        except ResourceLimitExceeded as exc:
            self._report.report(LIMIT, str(peer), str(exc), peer=str(peer), resource=exc.resource)
            raise HandshakeError(str(exc)) from None
        try:
            server_nonce = new_nonce()
            await stream.send_all(server_reply(ticket.secret, transcript, server_nonce))
        except BaseException:
            held.release()
            raise
        recv_key, send_key = derive_keys(ticket.secret, transcript, server_nonce)
        seal = ticket.mode == "encrypted"
        channel = Channel(
            stream,
            peer_id=peer,
            purpose=ticket.purpose,
            mode=ticket.mode,
            cipher=ticket.cipher,
            encoder=FrameEncoder(
                max_payload=ticket.client_max_payload, cipher=ticket.cipher, key=send_key, encrypt=seal
            ),
            decoder=FrameDecoder(
                max_payload=self.max_payload, cipher=ticket.cipher, key=recv_key, encrypt=seal
            ),
            events=self.events,
        )
        return channel, route, held

    async def _handle_request(self, stream: INetStream) -> None:
        """``/accel/bulk/2.0.0``: one request, one response (a ticket or a refusal)."""
        peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(self.limits.handshake_timeout_s):
                request = ChannelRequest.decode(await read_control(stream))
                await stream.write(encode_response(self._grant(peer, request)))
            await stream.close()
        except Exception as exc:  # a malformed request or a broken stream: reset and move on
            log.info("bulk channel request failed", extra={"peer_id": str(peer), "error": describe(exc)})
            try:
                await stream.reset()
            except Exception as reset_exc:  # already broken
                log.debug("bulk stream reset failed", extra={"error": str(reset_exc)})

    def _refusal_reason(self, peer: ID, request: ChannelRequest) -> str | None:
        if not self._tasks.running or not self._port:
            return "not accepting bulk channels"
        if peer != self.local_id:
            limit, open_here = self.limits, self.resources.used(CHANNELS, str(peer))
            if open_here >= limit.channels_per_peer:
                return f"busy: {open_here} bulk channels open for this peer (limit {limit.channels_per_peer})"
            if self.resources.used(CHANNELS) >= limit.channels:
                return f"busy: {limit.channels} bulk channels open"
        return self._handlers.refusal(request.purpose, request.mode)

    def _grant(self, peer: ID, request: ChannelRequest) -> TicketGrant | Refusal:
        try:
            return self._ticket(peer, request)
        except RefusedError as exc:
            reason = str(exc)
        kind = LIMIT if reason.startswith("busy") else REFUSED
        self._report.report(kind, f"grant:{peer}", reason, peer=str(peer), purpose=request.purpose)
        return Refusal(reason)

    def _ticket(self, peer: ID, request: ChannelRequest) -> TicketGrant:
        reason = self._refusal_reason(peer, request)
        if reason is not None:
            raise RefusedError(reason)
        cipher = choose_cipher([c for c in request.ciphers if c in self.ciphers])
        if cipher is None:  # every channel needs one: "plain" frames are authenticated too
            offered, ours = list(request.ciphers), list(self.ciphers)
            raise RefusedError(f"no common cipher (offered {offered}, we have {ours})")
        ticket = self._tickets.issue(peer.to_bytes(), request, cipher, trio.current_time())
        return TicketGrant(
            port=self._port,
            ticket_id=ticket.ticket_id,
            secret=ticket.secret,
            cipher=cipher,
            max_payload=self.max_payload,
            ttl_s=self._tickets.ttl_s,
        )

    # -- client ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def open(
        self, peer_id: ID, purpose: str, *, encrypted: bool = True, timeout_s: float = 10.0
    ) -> AsyncIterator[FrameChannel]:
        """A channel to ``peer_id`` for ``purpose``, closed when the block exits.

        ``encrypted=False`` asks for a ``plain`` channel: payloads in the clear (public content),
        every frame still authenticated. Needs a libp2p connection to the peer (or its address in
        the peerstore); a channel to this node itself is served in memory by its own handlers.
        Raises :class:`RefusedError` when the peer refuses (no handler, mode not allowed, busy) and
        :class:`HandshakeError` for anything else that keeps the channel from being established
        within ``timeout_s``.
        """
        check_purpose(purpose)
        mode: Mode = "encrypted" if encrypted else "plain"
        if peer_id == self.local_id:
            async with self._loopback(purpose, mode) as own:
                yield own
            return
        try:
            with trio.fail_after(timeout_s):
                channel = await self._dialer.connect(peer_id, purpose, mode)
        except trio.TooSlowError:
            raise HandshakeError(
                f"timed out after {timeout_s:g} s opening a {mode} bulk channel to {peer_id}"
            ) from None
        try:
            yield channel
        finally:
            await channel.aclose()

    async def _request_ticket(self, peer_id: ID, request: ChannelRequest) -> tuple[TicketGrant, str]:
        return await self._dialer.request_ticket(peer_id, request)

    @asynccontextmanager
    async def _loopback(self, purpose: str, mode: Mode) -> AsyncIterator[Channel]:
        """A channel to ourselves: an in-memory pair, the far end served like an accepted channel."""
        request = ChannelRequest(purpose, mode, self.ciphers, self.max_payload)
        reason = self._refusal_reason(self.local_id, request)
        route = self._handlers.get(purpose)
        if reason is not None or route is None or not self._tasks.running:
            raise RefusedError(f"this node refused a {mode} bulk channel for {purpose!r} to itself: {reason}")
        ours, theirs = memory_channel_pair(
            self.local_id,
            self.local_id,
            purpose,
            mode=mode,
            cipher=choose_cipher(self.ciphers) or AES_256_GCM,
            opener_max_payload=self.max_payload,
            acceptor_max_payload=self.max_payload,
        )
        self.loopback_channels += 1
        self._tasks.spawn("loopback", self._handlers.serve, route, theirs, self.local_id)
        try:
            yield ours
        finally:
            await ours.aclose()
