"""Where pipeline stages are served: DHT provider records under ``/accel/shard/<model-cid>/<stage>``.

A provider record says only *who* serves a stage; *what* exactly (which plan, with which load) is
in that peer's signed capability record (``shards`` entries), which the router fetches and verifies
before choosing replicas. Provider records need a CID-shaped key: the key is the CIDv1 (raw,
sha2-256) of the UTF-8 path, as IPFS does for arbitrary keys.
"""

from __future__ import annotations

import logging

import trio
from libp2p.peer.id import ID

from p2p.content import CID
from p2p.content.cid import RAW
from p2p.dht import RecordDHT

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 5.0


def shard_path(model_cid: str, stage: int) -> str:
    return f"/accel/shard/{model_cid}/{stage}"


def shard_key(model_cid: str, stage: int) -> str:
    """The DHT provider key of stage ``stage`` of ``model_cid``."""
    return str(CID.compute(shard_path(model_cid, stage).encode(), RAW, 1))


async def announce(dht: RecordDHT, model_cid: str, stage: int) -> bool:
    """Provide the stage's key (best effort: peers also learn it from capability records)."""
    try:
        with trio.move_on_after(LOOKUP_TIMEOUT_S):  # a stalled peer must not hold up `shard serve`
            return bool(await dht.kad.provide(shard_key(model_cid, stage)))
        return False
    except Exception as exc:  # py-libp2p raises assorted errors when no peer is reachable
        log.warning("announcing a shard stage failed", extra={"model": model_cid, "stage": stage,
                                                              "error": str(exc)})  # fmt: skip
        return False


async def find(
    dht: RecordDHT, model_cid: str, stage: int, *, timeout_s: float = LOOKUP_TIMEOUT_S
) -> list[ID]:
    """Peers that announced the stage (deduplicated; may include stale ones: check capabilities)."""
    found: list[ID] = []
    with trio.move_on_after(timeout_s):
        try:
            for info in await dht.kad.find_providers(shard_key(model_cid, stage)):
                if info.peer_id not in found:
                    dht.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)
                    found.append(info.peer_id)
        except Exception as exc:  # one source among several (capability records of known peers)
            log.debug("shard provider lookup failed", extra={"model": model_cid, "error": str(exc)})
    return found
