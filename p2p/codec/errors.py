"""Errors raised by ``p2p.codec``.

Decoders here are shared by many wire formats, each with its own error taxonomy; they raise these
(or, for CBOR field checks, the error factory the caller passes) and callers translate with
``raise TheirError(...) from exc`` at their boundary.
"""

from __future__ import annotations

from p2p.errors import P2PError


class CodecError(P2PError, ValueError):
    """Base class of every error raised by ``p2p.codec``: the input is not what it must be."""


class VarintError(CodecError):
    """An unsigned varint could not be decoded."""


class TruncatedVarintError(VarintError):
    """The input ends inside a varint: a stream reader should wait for more bytes."""


class MalformedVarintError(VarintError):
    """A varint is over-long, not minimally encoded or larger than allowed: no more bytes help."""


class CborError(CodecError):
    """CBOR input is oversize, does not decode, or is not of the expected type and shape."""
