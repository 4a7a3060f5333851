"""accel-node: a daemon for cooperative machine-learning inference over a peer-to-peer network.

Where things live (imports only point downwards):
- ``cli``: the ``accel-node`` command; talks to a running daemon through ``client``.
- ``api``: the HTTP control API (FastAPI app, bearer-token auth, metrics, hypercorn server).
- ``node``: the composition root; builds every service from config and owns the root nursery.
- ``network``: the node's view of the libp2p network (dialing, bootstrap, latency, peer table).
- ``store``: the only module that touches the SQLite database.
- ``home``: the node home directory (config, identity, token, lock, api.json).
- ``config``: typed, validated configuration sections loaded from TOML.
- ``logs``, ``metrics``, ``errors``: cross-cutting helpers.
Networking primitives live in the separate ``p2p`` package, which never imports this one.
"""

__version__ = "0.1.0"
