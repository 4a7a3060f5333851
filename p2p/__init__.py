"""Networking substrate for accel-node, built on py-libp2p (trio).

This package never imports ``accel_node``; it is usable and testable on its own.

Modules:
- ``errors``: the error taxonomy of this package.
- ``identity``: persistent Ed25519 identities (key files) and peer ids.
- ``addrs``: parsing and validating multiaddrs, expanding wildcard listen addresses.
- ``host``: building a Noise-only, yamux libp2p host and running it under trio.
- ``ping``: round-trip measurements over ``/ipfs/ping/1.0.0`` with reused streams.
"""
