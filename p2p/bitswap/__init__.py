"""Bitswap 1.2.0 over py-libp2p, interoperable with Kubo in both directions.

- ``protocol``: sans-IO message framing and decoding (bounded), want/block/presence events.
- ``server``: answering peers' wants: a de-duplicated, bounded want list per peer, answered as a
  stream with bounded bytes in flight (after boxo's decision engine).
- ``service``: the trio service: reads peers' messages, hands their wants to the server, sends our
  wants, verifies every received block against its CID before handing it on.

py-libp2p ships a Bitswap implementation, but it answers on the stream the requester opened (Kubo
never reads that stream, so Kubo cannot fetch from it) and needs a nursery hook to avoid a 30 s
idle wait per round; Bitswap's wire contract is that each side sends on streams it opens itself.
Only its generated protobuf classes are reused here.
"""
