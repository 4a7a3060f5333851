"""Content identifiers (CIDs): parsing, formatting, computing and verifying.

A CIDv1 is ``<version=1><codec><multihash>`` (each integer an unsigned varint); a CIDv0 is a bare
sha2-256 multihash whose codec is implicitly dag-pb. This node writes CIDv1 in base32 lower case
(multibase prefix ``b``), which is what ``ipfs add --cid-version=1`` prints, and reads CIDv0
(``Qm...``, base58btc) too because older content and Kubo's default ``ipfs add`` use it.

Only stdlib is used (``base64`` for base32, a few lines of base58) so that decoding bounds every
size: strings longer than :data:`MAX_CID_STRING` and binary CIDs longer than :data:`MAX_CID_BYTES`
are refused before any work, varints are limited to 9 bytes and must be minimal, and strings must
be in canonical form (re-encoding gives the same text), so one CID has exactly one spelling per
base and cannot smuggle extra bits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from p2p.codec.errors import VarintError
from p2p.codec.varint import decode_uvarint, encode_uvarint
from p2p.content.errors import BlockVerificationError, InvalidCIDError, UnsupportedError

RAW = 0x55
"""Multicodec of raw blocks (file leaves with ``--raw-leaves``)."""
DAG_PB = 0x70
"""Multicodec of dag-pb (MerkleDAG protobuf) blocks."""
SHA2_256 = 0x12
"""Multihash code of sha2-256, the only hash function this package computes and verifies."""
SHA2_256_LENGTH = 32

CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}
MAX_CID_BYTES = 128
"""Upper bound on a binary CID (a sha2-256 CIDv1 is 36 bytes; 512-bit hashes need ~70)."""
MAX_CID_STRING = 256
"""Upper bound on a CID string (a sha2-256 CIDv1 in base32 is 59 characters)."""
MAX_DIGEST_LENGTH = 64

_SHA256_HEADER = bytes((SHA2_256, SHA2_256_LENGTH))
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """A multiformats varint (at most 9 bytes, minimal: one number, one spelling, so one CID has
    one byte string); a bad one makes the CID invalid."""
    try:
        return decode_uvarint(data, offset)
    except VarintError as exc:
        raise InvalidCIDError(str(exc)) from exc


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase ``b`` without the prefix)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    """Inverse of :func:`b32encode`; refuses non-canonical input (stray bits, padding, bad chars)."""
    upper = text.upper()
    try:
        data = base64.b32decode(upper + "=" * (-len(upper) % 8))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCIDError(f"invalid base32: {exc}") from exc
    if b32encode(data) != text:
        raise InvalidCIDError("non-canonical base32 (must be lower case, unpadded, no stray bits)")
    return data


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (multibase ``z`` without the prefix; CIDv0 strings)."""
    number = int.from_bytes(data, "big")
    chars = []
    while number:
        number, rem = divmod(number, 58)
        chars.append(_B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(chars))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; refuses characters outside the alphabet."""
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise InvalidCIDError(f"invalid base58 character {char!r}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def decode_multihash(data: bytes) -> tuple[int, bytes]:
    """Split a multihash into ``(hash_code, digest)``; the digest must fill the rest exactly."""
    code, pos = _read_varint(data, 0)
    length, pos = _read_varint(data, pos)
    if length > MAX_DIGEST_LENGTH:
        raise InvalidCIDError(f"multihash digest of {length} bytes exceeds {MAX_DIGEST_LENGTH}")
    if len(data) - pos != length:
        raise InvalidCIDError(f"multihash declares {length} digest bytes but has {len(data) - pos}")
    return code, data[pos:]


@dataclass(frozen=True, slots=True)
class CID:
    """A parsed, validated CID. Equality is by version, codec and multihash.

    Construct with :meth:`parse` (text), :meth:`decode` (binary), :meth:`compute` (hash a block)
    or :meth:`sha256` (from a digest computed elsewhere).
    """

    version: int
    codec: int
    multihash: bytes

    def __post_init__(self) -> None:
        if (
            self.multihash[:2] == _SHA256_HEADER
            and len(self.multihash) == 34
            and (self.codec == DAG_PB or (self.codec == RAW and self.version == 1))
            and self.version in (0, 1)
        ):
            return  # the common case, checked without parsing
        if self.version not in (0, 1):
            raise InvalidCIDError(f"unsupported CID version {self.version}")
        code, digest = decode_multihash(self.multihash)
        if self.version == 0 and (self.codec != DAG_PB or code != SHA2_256 or len(digest) != SHA2_256_LENGTH):
            raise InvalidCIDError("a CIDv0 must be a dag-pb sha2-256 CID")
        if self.codec < 0 or self.codec >= 1 << 63:
            raise InvalidCIDError(f"codec {self.codec} out of range")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def sha256(cls, digest: bytes, codec: int = RAW, version: int = 1) -> CID:
        """The CID of a block whose sha2-256 digest is ``digest``."""
        if len(digest) != SHA2_256_LENGTH:
            raise InvalidCIDError(f"a sha2-256 digest has 32 bytes, not {len(digest)}")
        return cls(version, codec, bytes((SHA2_256, SHA2_256_LENGTH)) + digest)

    @classmethod
    def compute(cls, block: bytes | bytearray | memoryview, codec: int = RAW, version: int = 1) -> CID:
        """Hash ``block`` with sha2-256 and return its CID."""
        return cls.sha256(hashlib.sha256(block).digest(), codec, version)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> CID:
        """Parse a binary CID (as found in dag-pb link ``Hash`` fields)."""
        raw = bytes(data)
        if len(raw) > MAX_CID_BYTES:
            raise InvalidCIDError(f"binary CID of {len(raw)} bytes exceeds {MAX_CID_BYTES}")
        if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == SHA2_256_LENGTH:
            return cls(0, DAG_PB, raw)
        version, pos = _read_varint(raw, 0)
        if version != 1:
            raise InvalidCIDError(f"unsupported binary CID version {version}")
        codec, pos = _read_varint(raw, pos)
        return cls(1, codec, raw[pos:])

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse a CID string: CIDv1 in base32 (``b``/``B``) or base58btc (``z``), or a CIDv0 (``Qm...``)."""
        if not isinstance(text, str):
            raise InvalidCIDError(f"a CID string must be str, not {type(text).__name__}")
        if not text or len(text) > MAX_CID_STRING:
            raise InvalidCIDError(f"CID string of length {len(text)} is empty or too long")
        if not text.isascii():
            raise InvalidCIDError(f"invalid CID {text!r}: non-ASCII characters")
        try:
            if len(text) == 46 and text.startswith("Qm"):
                cid = cls(0, DAG_PB, b58decode(text))
            elif text[0] == "b":
                cid = cls._parse_v1(b32decode(text[1:]))
            elif text[0] == "B":
                if text != text.upper():
                    raise InvalidCIDError("mixed-case base32")
                cid = cls._parse_v1(b32decode(text[1:].lower()))
            elif text[0] == "z":
                cid = cls._parse_v1(b58decode(text[1:]))
                if b58encode(cid.encode()) != text[1:]:
                    raise InvalidCIDError("non-canonical base58")
            else:
                raise InvalidCIDError("unsupported multibase prefix (expected 'b', 'B', 'z' or 'Qm')")
        except InvalidCIDError as exc:
            raise InvalidCIDError(f"invalid CID {text[:80]!r}: {exc}") from None
        return cid

    @classmethod
    def _parse_v1(cls, raw: bytes) -> CID:
        cid = cls.decode(raw)
        if cid.version != 1:
            raise InvalidCIDError("multibase-prefixed CID must be version 1")
        return cid

    # -- accessors ------------------------------------------------------------------------------

    @property
    def hash_code(self) -> int:
        """Multihash function code (0x12 for sha2-256)."""
        return decode_multihash(self.multihash)[0]

    @property
    def digest(self) -> bytes:
        """The raw digest inside the multihash."""
        return decode_multihash(self.multihash)[1]

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, hex(self.codec))

    def encode(self) -> bytes:
        """Binary form: the bare multihash for v0, ``0x01 <codec> <multihash>`` for v1."""
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_uvarint(self.codec) + self.multihash

    def to_v1(self) -> CID:
        """The same content as a CIDv1 (CIDv0 converts to dag-pb v1; v1 is returned as is)."""
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.encode())

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    # -- verification ---------------------------------------------------------------------------

    def matches(self, block: bytes | bytearray | memoryview) -> bool:
        """Whether ``block`` hashes to this CID's digest (sha2-256 only)."""
        code, digest = decode_multihash(self.multihash)
        if code != SHA2_256:
            raise UnsupportedError(f"hash function 0x{code:x} of {self} is not supported (only sha2-256)")
        return hashlib.sha256(block).digest() == digest

    def verify(self, block: bytes | bytearray | memoryview) -> None:
        """Raise :class:`BlockVerificationError` unless ``block`` hashes to this CID."""
        if not self.matches(block):
            raise BlockVerificationError(f"block of {len(block)} bytes does not match CID {self}")
