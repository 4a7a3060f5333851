"""The client side of a bulk channel: ask the peer for a ticket over libp2p, dial its port, prove it.

Kept apart from :mod:`p2p.bulk.service` (which accepts channels) because the client holds nothing
a peer can fill: it is one sequence of steps per channel, each bounded by the caller's timeout.
The channel it returns is authenticated whatever the mode (keys are derived in both; ``plain``
only leaves payloads unencrypted), and a grant without a cipher is refused: a peer that would
send bare frames is not spoken to.
"""

from __future__ import annotations

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p.bulk.channel import Channel
from p2p.bulk.endpoints import ips_of, quiet_reset, read_control, read_exactly
from p2p.bulk.errors import HandshakeError, RefusedError
from p2p.bulk.framing import FrameDecoder, FrameEncoder
from p2p.bulk.handlers import describe
from p2p.bulk.handshake import (
    REPLY_SIZE,
    ChannelRequest,
    Mode,
    Refusal,
    TicketGrant,
    Transcript,
    check_server_reply,
    client_hello,
    decode_response,
    derive_keys,
    new_nonce,
)
from p2p.events import EventSink, drop

PROTOCOL_ID = TProtocol("/accel/bulk/2.0.0")
"""Version 2: every frame is authenticated (version 1 sent ``plain`` frames bare)."""


class Dialer:
    """Opens channels from ``host`` (see the module docstring)."""

    def __init__(
        self, host: IHost, *, ciphers: tuple[str, ...], max_payload: int, events: EventSink = drop
    ) -> None:
        self.host = host
        self.ciphers = ciphers
        self.max_payload = max_payload
        self.events = events

    async def connect(self, peer_id: ID, purpose: str, mode: Mode) -> Channel:
        request = ChannelRequest(purpose, mode, self.ciphers, self.max_payload)
        grant, ip = await self.request_ticket(peer_id, request)
        try:
            stream = await trio.open_tcp_stream(ip, grant.port)
        except OSError as exc:
            raise HandshakeError(f"cannot connect to {peer_id}'s bulk port {ip}:{grant.port}: {exc}") from exc
        try:
            transcript = Transcript(
                ticket_id=grant.ticket_id,
                server=peer_id.to_bytes(),
                client=self.host.get_id().to_bytes(),
                purpose=purpose,
                mode=mode,
                cipher=grant.cipher,
                client_nonce=new_nonce(),
            )
            await stream.send_all(client_hello(grant.secret, transcript))
            try:
                reply = await read_exactly(stream, REPLY_SIZE)
            except HandshakeError as exc:
                raise HandshakeError(f"{peer_id} refused the bulk channel ticket ({exc})") from None
            server_nonce = check_server_reply(grant.secret, transcript, reply)
            send_key, recv_key = derive_keys(grant.secret, transcript, server_nonce)
            seal = mode == "encrypted"
            return Channel(
                stream,
                peer_id=peer_id,
                purpose=purpose,
                mode=mode,
                cipher=grant.cipher,
                encoder=FrameEncoder(
                    max_payload=grant.max_payload, cipher=grant.cipher, key=send_key, encrypt=seal
                ),
                decoder=FrameDecoder(
                    max_payload=self.max_payload, cipher=grant.cipher, key=recv_key, encrypt=seal
                ),
                events=self.events,
            )
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            if isinstance(exc, OSError | trio.BrokenResourceError):
                raise HandshakeError(f"bulk channel handshake with {peer_id} broke: {exc}") from exc
            raise

    async def request_ticket(self, peer_id: ID, request: ChannelRequest) -> tuple[TicketGrant, str]:
        """The peer's grant (or :class:`RefusedError`) and the IP to dial it at."""
        try:
            stream = await self.host.new_stream(peer_id, [PROTOCOL_ID])
        except Exception as exc:  # py-libp2p raises a wide, unstable set of error types
            raise HandshakeError(f"cannot open a bulk request stream to {peer_id}: {describe(exc)}") from exc
        try:
            await stream.write(request.encode())
            raw = await read_control(stream)
            address = stream.get_remote_address()
            await stream.close()
        except HandshakeError:
            await quiet_reset(stream)
            raise
        except Exception as exc:
            await quiet_reset(stream)
            raise HandshakeError(f"bulk channel request to {peer_id} failed: {describe(exc)}") from exc
        response = decode_response(raw)
        if isinstance(response, Refusal):
            raise RefusedError(
                f"{peer_id} refused a {request.mode} bulk channel for {request.purpose!r}: {response.reason}"
            )
        ip = address[0] if address else self._peerstore_ip(peer_id)
        return response, ip

    def _peerstore_ip(self, peer_id: ID) -> str:
        try:
            addrs = self.host.get_peerstore().addrs(peer_id)
        except Exception:  # py-libp2p raises PeerStoreError for unknown peers
            addrs = []
        ips = ips_of(addrs)
        if not ips:
            raise HandshakeError(f"no IP address known for {peer_id}")
        return ips[0]
