"""Protocol ``/accel/token/1.0.0``: a peer presents its capability tokens to this node.

Why a protocol of its own rather than a token attached to each request: RUNs and block wants are
hot paths shared with other helpers' protocols, and a signature check per request costs more than
the policy look-up it feeds (see ``scripts/bench/policy.py``). So a peer presents its tokens once,
over the Noise-authenticated libp2p connection (the presenter's peer id is the connection's, never
a claim inside the message); the node checks each token and remembers the accepted ones for that
peer id until they expire (:class:`~accel_node.policy.book.TokenBook`). The requesting side presents
its tokens whenever it connects to a peer (:class:`~accel_node.policy.service.PolicyService` does
this on every new connection) and again on demand (:meth:`PolicyService.present`).

Wire (one exchange per stream): the presenter writes a 4-byte big-endian length and a canonical
CBOR map ``{"tokens": [envelope bytes, ...]}`` (at most :data:`MAX_TOKENS` tokens, at most
:data:`MAX_MESSAGE_BYTES`); the node answers ``{"results": [[token id or "", "accepted" or a short
reason], ...]}`` in the same order. Reasons are generic ("expired", "revoked", "wrong subject",
"bad signature", "untrusted issuer", "malformed", "limit") and say nothing about other peers.
Streams per peer are bounded by the resource ``policy.token_streams``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import cbor2
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from accel_node.policy.errors import PolicyError
from accel_node.policy.tokens import MAX_TOKEN_BYTES
from p2p.codec.cbor import load_map
from p2p.resources import Limit, ResourceLimitExceeded, ResourceManager

log = logging.getLogger(__name__)

TOKEN_PROTOCOL = TProtocol("/accel/token/1.0.0")
MAX_TOKENS = 8
MAX_MESSAGE_BYTES = MAX_TOKENS * (MAX_TOKEN_BYTES + 16) + 64
MAX_ANSWER_BYTES = 4096
LENGTH = struct.Struct(">I")
READ_TIMEOUT_S = 10.0
STREAMS = "policy.token_streams"
STREAM_LIMIT = Limit(per_peer=2, total=64)
ACCEPTED = "accepted"

Accept = Callable[[str, Sequence[bytes]], list[tuple[str, str]]]


class ExchangeError(PolicyError):
    """A token exchange was malformed or failed."""

    status = 502
    code = "token_exchange_failed"


async def _read_exactly(stream: INetStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            raise ExchangeError(f"stream closed after {len(data)} of {size} bytes")
        data += chunk
    return data


async def _read(stream: INetStream, max_bytes: int) -> Any:
    (size,) = LENGTH.unpack(await _read_exactly(stream, LENGTH.size))
    if size > max_bytes:
        raise ExchangeError(f"message of {size} bytes exceeds {max_bytes}")
    return load_map(
        await _read_exactly(stream, size), max_bytes=max_bytes, what="token message", error=ExchangeError
    )


async def _write(stream: INetStream, message: dict[str, Any]) -> None:
    body = cbor2.dumps(message, canonical=True)
    await stream.write(LENGTH.pack(len(body)) + body)


def token_handler(accept: Accept, resources: ResourceManager) -> Callable[[INetStream], Awaitable[None]]:
    """The stream handler: ``accept(peer id, token envelopes)`` gives one result per token."""
    resources.set_limit(STREAMS, STREAM_LIMIT)

    async def handle(stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        try:
            slot = resources.reserve(STREAMS, peer)
        except ResourceLimitExceeded:
            await stream.reset()
            return
        try:
            with slot, trio.fail_after(READ_TIMEOUT_S):
                message = await _read(stream, MAX_MESSAGE_BYTES)
                message.require_exactly({"tokens"})
                raw = message.list_("tokens", max_len=MAX_TOKENS)
                if any(not isinstance(t, bytes) for t in raw):
                    raise ExchangeError("tokens must be byte strings")
                results = accept(peer, raw)
                await _write(stream, {"results": [list(r) for r in results]})
                await stream.close()
        except Exception as exc:  # malformed, slow or broken: reset and move on
            log.info("token exchange failed", extra={"peer_id": peer, "error": str(exc)[:200]})
            await stream.reset()

    return handle


async def present(
    host: IHost, peer: ID, tokens: Sequence[bytes], *, timeout_s: float = 10.0
) -> list[tuple[str, str]]:
    """Present ``tokens`` to ``peer``; its (token id, result) per token."""
    if not 0 < len(tokens) <= MAX_TOKENS:
        raise ExchangeError(f"present 1..{MAX_TOKENS} tokens at a time")
    try:
        stream = await host.new_stream(peer, [TOKEN_PROTOCOL])
    except Exception as exc:
        raise ExchangeError(f"cannot open a token stream to {peer}: {exc}") from exc
    try:
        with trio.fail_after(timeout_s):
            await _write(stream, {"tokens": list(tokens)})
            answer = await _read(stream, MAX_ANSWER_BYTES)
        await stream.close()
    except Exception as exc:
        await stream.reset()
        raise ExchangeError(f"presenting tokens to {peer} failed: {str(exc) or type(exc).__name__}") from exc
    results = answer.list_("results", max_len=MAX_TOKENS)
    out = []
    for item in results:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ExchangeError("malformed token exchange answer")
        out.append((item[0][:64], item[1][:64]))
    return out
