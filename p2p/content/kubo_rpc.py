"""A small trio-native client of a Kubo (IPFS) node's HTTP RPC API, ``/api/v0``.

Why not ``ipfshttpclient``: its last release (0.7) refuses every Kubo from 0.8 on (it raises
``VersionMismatch`` at connect time, and Kubo is at 0.2x) and it is blocking, so every call would
need a worker thread. The handful of calls a node needs (``version``, ``id``, ``add``, ``cat``,
``block/get``, ``block/put``, ``pin/add``, ``routing/provide``) are a few lines each on
``httpx.AsyncClient``, which runs on trio.

What the RPC API requires and what this client guarantees:

- Every call is a POST (Kubo answers GET on ``/api/v0`` with 405, a CSRF protection) with the
  arguments in the query string and uploads as ``multipart/form-data``.
- Kubo is not trusted. Every answer is read with a byte bound (the response is streamed and
  reading stops past the bound: :class:`ResponseTooLargeError`), JSON answers are checked for
  shape, and every block from :meth:`KuboRpcClient.block_get` is hashed here and refused unless it
  matches the CID that was asked for (:class:`BlockVerificationError`). :meth:`KuboRpcClient.cat`
  returns file bytes as Kubo sends them: it is for diagnostics and tests; model content travels
  block by block through ``block/get`` and the verifying reader.
- ``add`` asks for the layout whose CIDs :mod:`p2p.content.unixfs` computes (CIDv1, raw leaves,
  256 KiB chunks, base32) and ``block/put`` checks that Kubo filed the block under the CID this
  side computes, so content put into Kubo by a node and content added by Kubo have one address.
- Failures become this package's errors: :class:`KuboUnavailableError` ("no Kubo RPC API at ...:
  is the daemon running?") when nothing answers, :class:`KuboRpcError` with Kubo's own message for
  HTTP errors, timeouts and malformed answers.

The API address is a multiaddr as Kubo writes it in ``Addresses.API``: ``/ip4/127.0.0.1/tcp/5001``,
``/ip6/::1/tcp/5001``, ``/dns4/ipfs.local/tcp/5001`` (optionally ending in ``/http`` or ``/https``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import trio

from p2p.content.cid import CID, DAG_PB, RAW
from p2p.content.dagpb import MAX_BLOCK_SIZE
from p2p.content.errors import (
    BlockVerificationError,
    ContentError,
    InvalidCIDError,
    KuboRpcError,
    KuboUnavailableError,
    ResponseTooLargeError,
)
from p2p.content.unixfs import CHUNK_SIZE
from p2p.errors import InvalidAddressError

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001"
"""Kubo's default ``Addresses.API``."""
DEFAULT_TIMEOUT_S = 30.0
MAX_JSON_BYTES = 1024 * 1024
"""Bound on the JSON answers of small commands (version, id, block/put, pin/add, add)."""
MAX_ERROR_BYTES = 16 * 1024
"""How much of an error answer is read to quote Kubo's message."""
ADD_PARAMS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{CHUNK_SIZE}",
    "pin": "true",
    "cid-base": "base32",
}
"""``ipfs add --cid-version=1 --raw-leaves --chunker=size-262144 --pin --cid-base=base32``."""
_CODECS = {RAW: "raw", DAG_PB: "dag-pb"}
_UPLOAD_CHUNK = 256 * 1024


def api_url(addr: str) -> str:
    """The HTTP base URL of a Kubo API multiaddr (``/ip4/127.0.0.1/tcp/5001`` -> ``http://127.0.0.1:5001``).

    Accepts ``/ip4``, ``/ip6``, ``/dns``, ``/dns4``, ``/dns6`` followed by ``/tcp/<port>`` and an
    optional ``/http`` or ``/https``; raises :class:`~p2p.errors.InvalidAddressError` otherwise.
    """
    from p2p.addrs import parse_multiaddr  # multiaddr is only needed here

    parsed = parse_multiaddr(addr)
    protocols = [p.name for p in parsed.protocols()]
    scheme = "http"
    if protocols[-1:] in (["http"], ["https"]):
        scheme = protocols.pop()
    if (
        len(protocols) != 2
        or protocols[0] not in ("ip4", "ip6", "dns", "dns4", "dns6")
        or protocols[1] != "tcp"
    ):
        raise InvalidAddressError(
            f"invalid Kubo API address {addr!r}: expected /ip4/<addr>/tcp/<port> "
            "(or /ip6, /dns, /dns4, /dns6; optionally ending in /http or /https)"
        )
    host = str(parsed.value_for_protocol(protocols[0]))
    port = int(str(parsed.value_for_protocol("tcp")))
    if not 0 < port < 65536:
        raise InvalidAddressError(f"invalid Kubo API address {addr!r}: port {port} out of range")
    if protocols[0] == "ip6":
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class KuboPeer:
    """What ``id`` says about the node."""

    peer_id: str
    addresses: tuple[str, ...]
    agent_version: str


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``add`` says about the file it added."""

    cid: CID
    dag_size: int
    """Kubo's ``Size``: bytes of the whole DAG (blocks included), not the file size."""


def _json_object(data: bytes, command: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise KuboRpcError(f"Kubo RPC {command} answered with malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise KuboRpcError(f"Kubo RPC {command} answered with JSON that is not an object")
    return value


def _field(obj: Mapping[str, Any], key: str, kind: type, command: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise KuboRpcError(f"Kubo RPC {command} answer lacks {key!r} ({kind.__name__})")
    return value


def _parse_cid(text: str, command: str) -> CID:
    try:
        return CID.parse(text)
    except InvalidCIDError as exc:
        raise KuboRpcError(f"Kubo RPC {command} answered with an invalid CID: {exc}") from exc


def _error_message(command: str, status: int, body: bytes | bytearray) -> str:
    """Kubo's error answers are ``{"Message": ..., "Code": ..., "Type": "error"}``; quote the message."""
    message = body.decode("utf-8", "replace").strip()
    try:
        value = json.loads(body)
        if isinstance(value, dict) and isinstance(value.get("Message"), str):
            message = value["Message"]
    except ValueError:
        pass
    return f"Kubo RPC {command} failed (HTTP {status}): {message[:500] or 'no message'}"


async def _read_bounded(response: httpx.Response, max_bytes: int, command: str) -> bytes:
    """The body of ``response``, refusing (and not reading) anything past ``max_bytes``."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLargeError(
            f"Kubo RPC {command} answer of {declared} bytes exceeds the bound of {max_bytes} bytes"
        )
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > max_bytes:
            raise ResponseTooLargeError(
                f"Kubo RPC {command} answer exceeds the bound of {max_bytes} bytes (stopped reading)"
            )
    return bytes(body)


class _Upload:
    """A ``multipart/form-data`` body with one file part, streamed from memory or from disk."""

    def __init__(self, source: bytes | Path, filename: str) -> None:
        self.source = source
        self.boundary = uuid.uuid4().hex
        self.head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quote(filename, safe="")}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = len(source) if isinstance(source, bytes) else os.stat(source).st_size

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(len(self.head) + self.size + len(self.tail)),
        }

    def content(self) -> bytes | AsyncIterator[bytes]:
        if isinstance(self.source, bytes):
            return self.head + self.source + self.tail
        return self._stream(self.source)

    async def _stream(self, path: Path) -> AsyncIterator[bytes]:
        yield self.head
        sent = 0
        async with await trio.open_file(path, "rb") as file:
            while sent < self.size:
                piece = await file.read(min(_UPLOAD_CHUNK, self.size - sent))
                if not piece:
                    raise KuboRpcError(f"{path} shrank while it was being uploaded")
                sent += len(piece)
                yield piece
        yield self.tail


class KuboRpcClient:
    """A client of one Kubo RPC API. Use as ``async with KuboRpcClient(addr) as kubo: ...``.

    ``transport`` replaces the network (tests hand in ``httpx.MockTransport``); ``timeout_s`` is
    the default per-call time limit (connect, and each read while waiting for the answer).
    """

    def __init__(
        self,
        api: str = DEFAULT_API,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api = api
        self.url = api_url(api)
        self.timeout_s = timeout_s
        self._legacy_block_put = False
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout_s,
            transport=transport,
            trust_env=False,  # a proxy from the environment must not sit between a node and its Kubo
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    async def __aenter__(self) -> KuboRpcClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the one place that talks HTTP ----------------------------------------------------------

    async def _call(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        max_bytes: int = MAX_JSON_BYTES,
        upload: _Upload | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """POST ``/api/v0/<command>`` and return its body (at most ``max_bytes``)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with self._http.stream(
                "POST",
                f"/api/v0/{command}",
                params=dict(params or {}),
                content=upload.content() if upload else None,
                headers=upload.headers if upload else None,
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) >= MAX_ERROR_BYTES:
                            break  # enough to quote Kubo's message
                    raise KuboRpcError(_error_message(command, response.status_code, body))
                return await _read_bounded(response, max_bytes, command)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise KuboUnavailableError(
                f"no Kubo RPC API at {self.api}: is the daemon running? ({exc})"
            ) from exc
        except httpx.TimeoutException as exc:
            raise KuboRpcError(f"Kubo RPC {command} at {self.api} timed out after {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise KuboRpcError(f"Kubo RPC {command} at {self.api} failed: {exc!r}") from exc

    def _timeout_param(self, timeout_s: float | None) -> dict[str, str]:
        """Kubo's ``timeout`` option: the node gives up (and stops searching the network) in time.

        A little shorter than the HTTP timeout, so that Kubo's own error arrives first.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        return {"timeout": f"{max(1, int(limit * 900))}ms"}

    async def _call_json(
        self, command: str, params: Mapping[str, str] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return _json_object(await self._call(command, params, **kw), command)

    # -- node ---------------------------------------------------------------------------------

    async def version(self) -> str:
        """The node's version string (``Version``, e.g. ``0.22.0``)."""
        return str(_field(await self._call_json("version"), "Version", str, "version"))

    async def id(self) -> KuboPeer:
        """The node's peer id, listen addresses and agent version."""
        answer = await self._call_json("id")
        addresses = answer.get("Addresses") or []
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise KuboRpcError("Kubo RPC id answer has malformed 'Addresses'")
        return KuboPeer(
            peer_id=_field(answer, "ID", str, "id"),
            addresses=tuple(addresses),
            agent_version=str(answer.get("AgentVersion", "")),
        )

    # -- files --------------------------------------------------------------------------------

    async def add(
        self, source: bytes | str | os.PathLike[str], *, timeout_s: float | None = None
    ) -> AddResult:
        """Add and pin a file (bytes or a path) with the layout of :mod:`p2p.content.unixfs`.

        The returned CID is Kubo's; it equals ``compute_cid`` of the same bytes.
        """
        data = source if isinstance(source, bytes) else Path(source)
        upload = _Upload(data, "file" if isinstance(data, bytes) else data.name)
        body = await self._call("add", ADD_PARAMS, upload=upload, timeout_s=timeout_s)
        last: dict[str, Any] | None = None
        for line in body.splitlines():
            if not line.strip():
                continue
            entry = _json_object(line, "add")
            if entry.get("Type") == "error":
                raise KuboRpcError(f"Kubo RPC add failed: {entry.get('Message', 'no message')}")
            if "Hash" in entry:
                last = entry
        if last is None:
            raise KuboRpcError("Kubo RPC add answered without a CID")
        size = last.get("Size", "0")
        return AddResult(
            cid=_parse_cid(_field(last, "Hash", str, "add"), "add"),
            dag_size=int(size) if isinstance(size, str | int) and str(size).isdigit() else 0,
        )

    async def cat(self, cid: CID, *, max_bytes: int, timeout_s: float | None = None) -> bytes:
        """The bytes of the file ``cid`` as Kubo sends them (unverified; see the module docstring)."""
        return await self._call("cat", {"arg": str(cid)}, max_bytes=max_bytes, timeout_s=timeout_s)

    # -- blocks -------------------------------------------------------------------------------

    async def block_get(
        self, cid: CID, *, max_bytes: int = MAX_BLOCK_SIZE, timeout_s: float | None = None
    ) -> bytes:
        """The block ``cid``, which Kubo finds locally or on the IPFS network; verified here.

        Raises :class:`BlockVerificationError` if the bytes Kubo sent do not hash to ``cid``.
        """
        params = {"arg": str(cid), **self._timeout_param(timeout_s)}
        data = await self._call("block/get", params, max_bytes=max_bytes, timeout_s=timeout_s)
        try:
            matches = await trio.to_thread.run_sync(cid.matches, data)
        except ContentError as exc:  # a hash function this node cannot check
            raise KuboRpcError(f"cannot verify block {cid} from Kubo: {exc}") from exc
        if not matches:
            raise BlockVerificationError(
                f"Kubo RPC at {self.api} sent {len(data)} bytes for block {cid} that do not match its CID"
            )
        return data

    async def block_put(self, data: bytes, *, codec: int = RAW, timeout_s: float | None = None) -> CID:
        """Store one block (sha2-256; codec raw or dag-pb); return its CID, checked to be ours.

        Kubo (0.13 on) takes the codec as ``cid-codec``; older nodes and js-ipfs ignore that and
        take ``format`` and ``version``. The first answer that files a block under another codec
        switches this client to the older spelling (and that block is put again).
        """
        if codec not in _CODECS:
            raise ValueError(f"block_put supports raw and dag-pb, not codec 0x{codec:x}")
        expected = await trio.to_thread.run_sync(CID.compute, data, codec)
        for _ in range(2):
            legacy = self._legacy_block_put  # this request's spelling (others may switch meanwhile)
            params = {"mhtype": "sha2-256", "mhlen": "-1", "pin": "false"}
            if legacy:
                params.update({"format": _CODECS[codec], "version": "1"})
            else:
                params["cid-codec"] = _CODECS[codec]
            upload = _Upload(data, "block")
            answer = await self._call_json("block/put", params, upload=upload, timeout_s=timeout_s)
            stored = _parse_cid(_field(answer, "Key", str, "block/put"), "block/put")
            if stored.to_v1() == expected:
                return expected
            if legacy or stored.codec == codec:
                break
            self._legacy_block_put = True
        raise KuboRpcError(f"Kubo RPC block/put filed a block under {stored}, but it hashes to {expected}")

    async def pin_add(self, cid: CID, *, recursive: bool = True, timeout_s: float | None = None) -> None:
        """Pin ``cid`` (and, recursively, its DAG) so that Kubo's garbage collection keeps it."""
        params = {
            "arg": str(cid),
            "recursive": "true" if recursive else "false",
            **self._timeout_param(timeout_s),
        }
        answer = await self._call_json("pin/add", params, timeout_s=timeout_s)
        pins = answer.get("Pins")
        if not isinstance(pins, list) or not pins:
            raise KuboRpcError(f"Kubo RPC pin/add did not report pinning {cid}")

    async def routing_provide(self, cid: CID, *, timeout_s: float | None = None) -> None:
        """Announce ``cid`` in the IPFS DHT (``routing/provide``; ``dht/provide`` on older nodes)."""
        params = {"arg": str(cid), "recursive": "false", **self._timeout_param(timeout_s)}
        try:
            await self._call("routing/provide", params, timeout_s=timeout_s)
        except KuboUnavailableError:
            raise
        except KuboRpcError as exc:
            if "(HTTP 404)" not in str(exc):
                raise
            await self._call("dht/provide", params, timeout_s=timeout_s)
