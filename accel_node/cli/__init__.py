"""The ``accel-node`` command.

- ``main``: the click commands; ``init`` and ``run`` act on the node home, every other command
  talks to the running daemon.
- ``client``: a small synchronous client of the control API (finds the daemon through api.json).
- ``render``: tables and JSON output.
"""
