"""Networking substrate for accel-node, built on py-libp2p (trio).

This package never imports ``accel_node``; it is usable and testable on its own.

Modules:
- ``errors``: the error taxonomy of this package.
- ``codec``: the one unsigned-varint codec and the one bounded CBOR reader (``CborMap`` field
  getters) that every wire format here and in ``accel_node`` decodes with.
- ``identity``: persistent Ed25519 identities (key files) and peer ids.
- ``addrs``: parsing and validating multiaddrs, expanding wildcard listen addresses.
- ``liblogs``: py-libp2p's log records routed through the application's logging (never bare
  lines on stderr); ``host`` and ``dht`` apply it at import.
- ``host``: building a Noise-only, yamux libp2p host and running it under trio.
- ``ping``: round-trip measurements over ``/ipfs/ping/1.0.0`` with reused streams.
- ``records``: the signed, expiring record envelope; ``dht``: the record DHT (Kademlia) with its
  own iterative lookup; ``pubsub``: GossipSub; ``mdns``: LAN discovery; ``perf``: RTT/throughput.
- ``penalties``: the penalty box of peers caught sending provably bad data.
- ``content``: UnixFS importer with Kubo-equal CIDs, reader, on-disk block store, Kubo RPC client.
- ``bitswap``: Bitswap 1.2.0 (interoperates with Kubo); ``bulk``: direct TCP channels agreed over
  the authenticated libp2p stream, and content blocks over them.
"""
