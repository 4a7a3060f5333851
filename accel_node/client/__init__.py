"""The typed HTTP client of the control API: the core API (:mod:`accel_node.core.contract`) over
HTTP. :class:`AsyncClient` is the source; :class:`Client` (synchronous, what the CLI uses) is
generated from it by ``scripts/unasync_client.py``, as httpcore generates its sync code, so the two
never drift apart (a test regenerates it and compares).

    with Client.for_home(NodeHome(path)) as api:
        print(api.node.status().peer_id)
"""

from accel_node.client._async import AsyncClient
from accel_node.client._sync import Client
from accel_node.client.common import RawOutput, daemon_address
from accel_node.core.contract import CoreApi

__all__ = ["AsyncClient", "Client", "RawOutput", "daemon_address"]


def as_core(client: AsyncClient) -> CoreApi:
    """``client`` as the contract; mypy checks here that the HTTP client implements every domain."""
    return client
