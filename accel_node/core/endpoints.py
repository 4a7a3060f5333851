"""Every endpoint of the control API, defined once.

The API registers its routes from these (``accel_node.api.routing.route``) and the HTTP client
builds its requests from them; ``tests/core/test_conformance.py`` checks that the app serves
exactly this set, so a path can change in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from accel_node.home import ADMIN, READ

OPEN = "open"  # needs no token at all


@dataclass(frozen=True)
class Endpoint:
    """One HTTP operation: method and path template (``{name}`` marks a path parameter), and the
    API token scope it needs: ``admin`` (the default: anything that changes state or could reveal a
    secret), ``read`` (a safe GET that reveals no secret; the read-only token may call it) or
    ``open`` (no token)."""

    method: str
    path: str
    scope: str = ADMIN

    def url(self, **params: str) -> str:
        """The path with each parameter percent-encoded (a CID or name never adds a segment)."""
        return self.path.format(**{name: quote(value, safe="") for name, value in params.items()})


HEALTH = Endpoint("GET", "/healthz", OPEN)
STATUS = Endpoint("GET", "/v1/status", READ)
CONFIG = Endpoint("GET", "/v1/config", READ)
METRICS = Endpoint("GET", "/metrics", READ)

PEERS = Endpoint("GET", "/v1/peers", READ)
PEERS_FIND = Endpoint("GET", "/v1/peers/find", READ)
PEERS_CONNECT = Endpoint("POST", "/v1/peers/connect")
PEER = Endpoint("GET", "/v1/peers/{peer_id}", READ)
PEER_PERF = Endpoint("POST", "/v1/peers/{peer_id}/perf")

HARDWARE = Endpoint("GET", "/v1/hardware", READ)
PROFILE_START = Endpoint("POST", "/v1/profile")
PROFILE_JOB = Endpoint("GET", "/v1/profile", READ)

KEYS_NEW = Endpoint("POST", "/v1/keys")
KEYS = Endpoint("GET", "/v1/keys", READ)
TRUST_ADD = Endpoint("POST", "/v1/trust")
TRUST = Endpoint("GET", "/v1/trust", READ)
TRUST_REMOVE = Endpoint("DELETE", "/v1/trust/{name}")

AUDIT = Endpoint("GET", "/v1/audit", READ)
AUDIT_VERIFY = Endpoint("GET", "/v1/audit/verify", READ)
API_TOKEN_ROTATE = Endpoint("POST", "/v1/api-token/rotate")

MODELS_PUBLISH = Endpoint("POST", "/v1/models/publish")
MODELS_FETCH = Endpoint("POST", "/v1/models/fetch")
MODELS_FETCHES = Endpoint("GET", "/v1/models/fetches", READ)
MODELS_FETCH_PROGRESS = Endpoint("GET", "/v1/models/fetches/{cid}", READ)
MODELS = Endpoint("GET", "/v1/models", READ)
MODEL = Endpoint("GET", "/v1/models/{cid}", READ)
MODEL_REMOVE = Endpoint("DELETE", "/v1/models/{cid}")
MODEL_PIN = Endpoint("POST", "/v1/models/{cid}/pin")
MODEL_ANALYSIS = Endpoint("GET", "/v1/models/{cid}/analysis", READ)
MODEL_VARIANTS = Endpoint("GET", "/v1/models/{cid}/variants", READ)
MODEL_VARIANT_BUILD = Endpoint("POST", "/v1/models/{cid}/variants")
MODEL_BENCH = Endpoint("POST", "/v1/models/{cid}/bench")

INFER = Endpoint("POST", "/v1/infer/{cid}")
MEASUREMENTS = Endpoint("GET", "/v1/measurements", READ)
RUNTIME = Endpoint("GET", "/v1/runtime", READ)

SHARDS_PLAN = Endpoint("POST", "/v1/shards/plan")
SHARDS_SERVE = Endpoint("POST", "/v1/shards/serve")
SHARDS_UNSERVE = Endpoint("POST", "/v1/shards/unserve")
SHARDS = Endpoint("GET", "/v1/shards", READ)

POLICY = Endpoint("GET", "/v1/policy", READ)
POLICY_PUT = Endpoint("PUT", "/v1/policy")

ALL: tuple[Endpoint, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Endpoint))
