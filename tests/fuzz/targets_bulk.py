"""Fuzz targets of the bulk-channel wire: frames (plain and sealed), the TCP handshake, the control
messages on the libp2p stream, and the ``blocks/1`` frames carried on a channel."""

from __future__ import annotations

from p2p.bulk.blocks import decode_blocks, decode_wants, encode_blocks, encode_wants
from p2p.bulk.endpoints import read_control, read_exactly
from p2p.bulk.errors import FrameError, HandshakeError
from p2p.bulk.framing import AES_256_GCM, CHACHA20_POLY1305, FrameDecoder, FrameEncoder
from p2p.bulk.handshake import (
    HELLO_SIZE,
    REPLY_SIZE,
    ChannelRequest,
    Refusal,
    TicketGrant,
    Transcript,
    check_client_mac,
    check_server_reply,
    client_hello,
    decode_response,
    encode_response,
    parse_client_hello,
    server_reply,
)
from tests.fuzz.harness import MemoryStream, accepting, chunks, run_sync, target
from tests.fuzz.targets_codec import sample_cids

KEY = bytes(range(32))
MAX_PAYLOAD = 256 * 1024
"""Frame limit of the fuzzed decoders (small enough that a header may announce the limit cheaply)."""
_CIPHERS = (AES_256_GCM, CHACHA20_POLY1305)
_PAYLOADS = (b"", b"x", b"hello frames" * 3, bytes(range(256)))
_LARGE = bytes(range(1, 256)) * 275
"""A payload above the decoder's scratch size (read straight into a reused 1 MiB slot: slow to fuzz,
so only one seed has it). Not zeros: cut anywhere, zeros parse as thousands of empty frames."""


def _frames(cipher: str, payloads: tuple[bytes, ...] = _PAYLOADS, *, encrypt: bool = True) -> bytes:
    encoder = FrameEncoder(max_payload=MAX_PAYLOAD, cipher=cipher, key=KEY, encrypt=encrypt)
    return b"".join(encoder.encode_bytes(i % 256, payload) for i, payload in enumerate(payloads))


def _decode_frames(decoder: FrameDecoder, data: bytes) -> None:
    """Feed ``data[1:]`` cut in pieces sized after ``data[0]``, alternately through feed() and
    get_buffer()/buffer_updated(),
    reading frames (by view and by copy) as they complete, then end of file."""
    body = data[1:]
    first = data[0] if data else 0
    least = len(body) // 256  # at most ~256 pieces: splits matter, not their number
    for index, piece in enumerate(chunks(body, (least + first * 64 + 1, least + 3, least + first + 1))):
        if index % 2:
            decoder.feed(piece)
        else:
            rest = memoryview(piece)
            while rest:
                buffer = decoder.get_buffer()
                take = min(len(buffer), len(rest))
                buffer[:take] = rest[:take]
                decoder.buffer_updated(take)
                rest = rest[take:]
        while (view := decoder.next_view()) is not None:
            assert 0 <= view[0] <= 255 and len(view[1]) <= decoder.max_payload
            frame = decoder.next_frame()
            assert frame is None or len(frame.payload) <= decoder.max_payload
    decoder.eof()


def _plain_seeds() -> list[bytes]:
    def plain(payloads: tuple[bytes, ...] = _PAYLOADS) -> bytes:
        return _frames(AES_256_GCM, payloads, encrypt=False)

    return [b"\x10" + plain(), b"\xff" + plain(), b"\x03" + plain((b"ab", _LARGE))]


@target("bulk_frames_plain", _plain_seeds, max_len=80_000)
def fuzz_bulk_frames_plain(data: bytes) -> None:
    """Plain frames: the payload in the clear, followed by its AEAD tag (anything else fails it)."""
    with accepting(FrameError):
        _decode_frames(
            FrameDecoder(max_payload=MAX_PAYLOAD, cipher=AES_256_GCM, key=KEY, encrypt=False), data
        )


def _sealed_seeds() -> list[bytes]:
    seeds = [bytes([i, 0x10]) + _frames(cipher) for i, cipher in enumerate(_CIPHERS)]
    return [*seeds, b"\x00\x03" + _frames(AES_256_GCM, (b"ab", _LARGE))]


@target("bulk_frames_sealed", _sealed_seeds, max_len=80_000)
def fuzz_bulk_frames_sealed(data: bytes) -> None:
    """Sealed frames (first byte: the cipher); anything not sealed with the key fails authentication."""
    if not data:
        return
    cipher = _CIPHERS[data[0] % len(_CIPHERS)]
    with accepting(FrameError):
        _decode_frames(FrameDecoder(max_payload=MAX_PAYLOAD, cipher=cipher, key=KEY), data[1:])


# -- handshake ----------------------------------------------------------------------------------------

SECRET = bytes(range(100, 132))
TRANSCRIPT = Transcript(
    ticket_id=bytes(16),
    server=b"server-peer",
    client=b"client-peer",
    purpose="blocks/1",
    mode="encrypted",
    cipher=AES_256_GCM,
    client_nonce=bytes(range(32)),
)


def _handshake_seeds() -> list[bytes]:
    return [client_hello(SECRET, TRANSCRIPT), server_reply(SECRET, TRANSCRIPT, bytes(32))]


@target("bulk_handshake", _handshake_seeds, max_len=256)
def fuzz_bulk_handshake(data: bytes) -> None:
    """The TCP hello (read exactly as the server does, then its MAC checked) and the server's reply."""
    with accepting(HandshakeError):
        raw = run_sync(read_exactly(MemoryStream(data, chunk=13), HELLO_SIZE))  # type: ignore[arg-type]
        ticket_id, nonce, mac = parse_client_hello(raw)
        transcript = Transcript(
            ticket_id, b"server-peer", b"client-peer", "blocks/1", "encrypted", AES_256_GCM, nonce
        )
        check_client_mac(SECRET, transcript, mac)
    with accepting(HandshakeError):
        check_server_reply(SECRET, TRANSCRIPT, data[:REPLY_SIZE])


def _control_seeds() -> list[bytes]:
    grant = TicketGrant(4001, bytes(16), bytes(32), AES_256_GCM, MAX_PAYLOAD, 10.0)
    return [
        ChannelRequest("blocks/1", "encrypted", _CIPHERS, 1 << 20).encode(),
        ChannelRequest("shard/1", "plain", (), 4096).encode(),
        encode_response(grant),
        encode_response(TicketGrant(1, bytes(16), bytes(32), None, 1, 0.001)),
        encode_response(Refusal("no handler for this purpose")),
    ]


@target("bulk_control", _control_seeds, max_len=2048)
def fuzz_bulk_control(data: bytes) -> None:
    """A length-prefixed control message read from a stream, decoded as a request and as a response."""
    with accepting(HandshakeError):
        raw = run_sync(read_control(MemoryStream(data, chunk=5)))  # type: ignore[arg-type]
        with accepting(HandshakeError):
            ChannelRequest.decode(raw)
        decode_response(raw)


# -- blocks/1 frames -----------------------------------------------------------------------------------


def _blocks_seeds() -> list[bytes]:
    cids = sample_cids()
    return [
        b"\x00" + encode_wants(cids),
        b"\x01" + b"".join(encode_blocks([b"one", None, b"", b"three"])),
        b"\x01" + b"".join(encode_blocks([None])),
    ]


@target("bulk_blocks", _blocks_seeds)
def fuzz_bulk_blocks(data: bytes) -> None:
    """WANT frames (server side) and BLOCKS frames (client side); first byte picks which."""
    if not data:
        return
    with accepting(FrameError):
        if data[0] % 2:
            entries = decode_blocks(data[1:])
            assert sum(len(e) for e in entries if e is not None) <= len(data)
        else:
            decode_wants(data[1:])
