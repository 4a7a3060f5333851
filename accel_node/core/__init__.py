"""The core API of a node: one typed contract per domain, as Kubo's CoreAPI has.

What lives where:

- ``endpoints``: every HTTP endpoint once (method and path template); the API registers its routes
  from it and the HTTP client builds its requests from it, so the two cannot drift apart.
- ``schemas``: request and response bodies (pydantic), shared by the server and the client.
- ``contract``: the domain interfaces (node, peers, hardware, keys/trust, models, inference,
  shards) as Protocols, and :class:`CoreApi`, which groups them.

Two implementations: :mod:`accel_node.local` (in process, over the node's services; it owns the
orchestration) and :mod:`accel_node.client` (over HTTP). The conformance suite in
``tests/core/test_conformance.py`` runs the same cases against both.

This package imports no service and no py-libp2p, so that the CLI, which uses the client, starts fast.
"""
