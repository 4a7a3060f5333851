"""The content benchmark's serving process (``python -m scripts.bench.content --serve STORE``): one
on-disk block store served on 127.0.0.1 over bulk channels and our Bitswap, over py-libp2p's own
Bitswap from a second host, and as raw bytes over a bare TCP socket. It prints one JSON line with
its addresses, then serves until terminated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from p2p.content import CID, BlockStore

SINK = "sink"


def serve(store_dir: str) -> None:
    """``--serve``: serve the store over bulk, our Bitswap, py-libp2p's Bitswap and raw TCP."""
    import trio
    from libp2p.bitswap.block_store import BlockStore as PyBlockStore
    from libp2p.bitswap.cid import cid_to_bytes
    from libp2p.bitswap.client import BitswapClient
    from multiaddr import Multiaddr

    from p2p.bitswap.service import BitswapService
    from p2p.bulk import BulkService, Channel, serve_blocks
    from p2p.content import BlockNotFoundError
    from p2p.host import HostSettings, build_host, run_host
    from p2p.identity import generate_identity

    store = BlockStore(store_dir, max_bytes=1 << 40, fsync=False)
    raw_bytes = Path(store_dir, "data.bin").read_bytes()
    loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]

    def get_block(raw: bytes) -> bytes | None:
        try:
            return store.get(CID.decode(raw))
        except BlockNotFoundError:
            return None

    class StoreAdapter(PyBlockStore):  # py-libp2p's Bitswap reads the same on-disk store
        async def get_block(self, cid: Any) -> bytes | None:
            return await trio.to_thread.run_sync(get_block, cid_to_bytes(cid))

        async def put_block(self, cid: Any, data: bytes) -> None:
            raise RuntimeError("read-only")

        async def has_block(self, cid: Any) -> bool:
            return store.has(CID.decode(cid_to_bytes(cid)))

        async def delete_block(self, cid: Any) -> None:
            raise RuntimeError("read-only")

        def get_all_cids(self) -> list[bytes]:
            return [c.encode() for c in store.cids()]

    async def sink(channel: Channel, peer_id: Any) -> None:
        total = 0
        async for frame in channel:
            total += len(frame.payload)
        await channel.send(total.to_bytes(8, "big"))

    async def raw_client(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(memoryview(raw_bytes))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
            addrs = await nursery.start(run_host, host, loopback)
            bulk = BulkService(host)
            await nursery.start(bulk.run)
            serve_blocks(bulk, get_block)
            bulk.set_handler(SINK, sink, require_encryption=False)
            await nursery.start(BitswapService(host, get_block).run)

            py_host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
            py_addrs = await nursery.start(run_host, py_host, loopback)
            py_bitswap = BitswapClient(py_host, block_store=StoreAdapter())
            py_bitswap.set_nursery(nursery)
            await py_bitswap.start()

            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, raw_client, listeners)
            info = {
                "peer_id": host.get_id().to_base58(),
                "addr": str(addrs[0]),
                "py_peer_id": py_host.get_id().to_base58(),
                "py_addr": str(py_addrs[0]),
                "raw_port": listeners[0].socket.getsockname()[1],
            }
            print(json.dumps(info), flush=True)
            await trio.sleep_forever()

    trio.run(main)
