"""Bitswap 1.2.0 over py-libp2p, interoperable with Kubo in both directions.

- ``protocol``: sans-IO message framing and decoding (bounded), want/block/presence events.
- ``service``: the trio service: answers peers' wants from a block source, sends our wants,
  verifies every received block against its CID before handing it on.

py-libp2p ships a Bitswap implementation, but it answers on the stream the requester opened (Kubo
never reads that stream, so Kubo cannot fetch from it) and needs a nursery hook to avoid a 30 s
idle wait per round; Bitswap's wire contract is that each side sends on streams it opens itself.
Only its generated protobuf classes are reused here.
"""
