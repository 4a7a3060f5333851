"""Content addressing: CIDs, UnixFS files as Kubo builds them, and an on-disk block store.

The CIDs computed here are the ones ``ipfs add --cid-version=1 --raw-leaves`` prints (256 KiB
chunks, balanced DAG of at most 174 links per node, sha2-256, CIDv1 base32), so the same model
file added by Kubo or by a node has the same address. Nothing here does I/O on the network and
nothing is async (callers run the CPU- and disk-bound work in a worker thread), except the Kubo RPC
client, which is trio-native.

Modules:
- ``errors``: this package's error taxonomy (all subclasses of ``p2p.errors.P2PError``).
- ``cid``: :class:`CID` parsing/formatting (CIDv1 base32 and base58, CIDv0), verify (varints: ``p2p.codec``).
- ``dagpb``: bounded codecs for dag-pb nodes and UnixFS ``Data`` (canonical, Kubo byte order).
- ``unixfs``: the streaming file importer (``import_blocks``, ``import_file``, ``compute_cid``).
- ``reader``: the verifying, bounded reader (``read_file``, ``read_bytes``, ``export_file``).
- ``blockstore``: :class:`BlockStore`, blocks on disk with atomic writes, verification on read,
  a size bound, recursive pins and garbage collection.
- ``kubo_rpc``: :class:`KuboRpcClient`, an async client of a Kubo node's ``/api/v0`` (add, cat,
  block get/put, pin, provide) with bounded reads and every fetched block verified.
"""

from p2p.content.blockstore import BlockStore
from p2p.content.cid import CID, DAG_PB, RAW, SHA2_256
from p2p.content.errors import (
    BlockNotFoundError,
    BlockStoreError,
    BlockVerificationError,
    ContentError,
    CorruptBlockError,
    FileTooLargeError,
    InvalidCIDError,
    KuboRpcError,
    KuboUnavailableError,
    MalformedBlockError,
    ResponseTooLargeError,
    StoreFullError,
    UnsupportedError,
)
from p2p.content.kubo_rpc import AddResult, KuboPeer, KuboRpcClient, api_url
from p2p.content.reader import export_file, read_bytes, read_file
from p2p.content.unixfs import (
    CHUNK_SIZE,
    LINKS_PER_NODE,
    Block,
    ImportOptions,
    ImportResult,
    compute_cid,
    import_blocks,
    import_bytes,
    import_file,
)

__all__ = [
    "CHUNK_SIZE",
    "CID",
    "DAG_PB",
    "LINKS_PER_NODE",
    "RAW",
    "SHA2_256",
    "AddResult",
    "Block",
    "BlockNotFoundError",
    "BlockStore",
    "BlockStoreError",
    "BlockVerificationError",
    "ContentError",
    "CorruptBlockError",
    "FileTooLargeError",
    "ImportOptions",
    "ImportResult",
    "InvalidCIDError",
    "KuboPeer",
    "KuboRpcClient",
    "KuboRpcError",
    "KuboUnavailableError",
    "MalformedBlockError",
    "ResponseTooLargeError",
    "StoreFullError",
    "UnsupportedError",
    "api_url",
    "compute_cid",
    "export_file",
    "import_blocks",
    "import_bytes",
    "import_file",
    "read_bytes",
    "read_file",
]
