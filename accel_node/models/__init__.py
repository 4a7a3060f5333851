"""Signed model packages.

- ``errors``: the refusals a user can meet, each with its own error type.
- ``keys``: publisher Ed25519 keys (PyNaCl): generation, key ids, text form of public keys.
- ``manifest``: the model manifest, its canonical encoding, signing and verification.
- ``trust``: the trust store (publisher keys by name, in the node store) and rollback protection.
"""
