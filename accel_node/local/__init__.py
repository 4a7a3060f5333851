"""The in-process implementation of the core API (:mod:`accel_node.core.contract`) over the
node's services. It owns the orchestration that used to live in HTTP routes (removing a model
touches the model service, the library and the sessions), so the API routes stay thin adapters and
the same behaviour is reachable without HTTP. One module per domain; :class:`LocalApi` groups them.
"""

from accel_node.local.api import LocalApi, LocalServices

__all__ = ["LocalApi", "LocalServices"]
