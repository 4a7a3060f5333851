"""The byte-level codecs every ``p2p`` (and ``accel_node``) wire format is built from.

One implementation each, so that every decoder bounds sizes and reports malformed input the same
way instead of five hand-rolled copies drifting apart:

- ``varint``: unsigned LEB128 varints (multiformats, protobuf and length-prefix flavours are
  parameters of one decoder), with distinct "needs more bytes" and "malformed" outcomes.
- ``cbor``: a bounded CBOR reader (size bound before decoding, top-level type check) and
  :class:`~p2p.codec.cbor.CborMap`, the one typed field-getter style for decoded maps.
- ``errors``: :class:`~p2p.codec.errors.CodecError` and its subclasses; callers translate them into
  their own taxonomy with ``raise ... from exc`` or pass their error class to the reader directly.
"""
