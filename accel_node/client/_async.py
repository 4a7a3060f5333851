"""The asynchronous HTTP client of the control API.

The synchronous client (``_sync.py``) is generated from this file: edit this one, then run
``python scripts/unasync_client.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from accel_node.client.common import (
    DEFAULT_TIMEOUT_S,
    NPZ,
    RESPONSE_LIMITS,
    RawOutput,
    auth_headers,
    check,
    daemon_address,
    infer_params,
    params,
    unreachable,
)
from accel_node.core import endpoints as E
from accel_node.core.endpoints import Endpoint
from accel_node.core.schemas import (
    AuditRecords,
    AuditVerification,
    BenchRequest,
    ConfigView,
    FetchProgressList,
    FetchProgressView,
    FetchRequest,
    Hardware,
    InferOptions,
    ModelList,
    ModelView,
    NewKey,
    Peer,
    Peers,
    Perf,
    PlanRequest,
    PolicyPut,
    PolicyView,
    ProfileJob,
    PublishRequest,
    ServeRequest,
    Status,
    TokenRotated,
    TrustedKey,
    TrustedKeys,
    TrustRequest,
    UnserveRequest,
)
from accel_node.home import NodeHome

if TYPE_CHECKING:  # numpy is imported by infer() only: the CLI's other commands start faster
    import numpy as np

    Arrays = dict[str, np.ndarray[Any, Any]]


class AsyncTransport:
    """One HTTP connection pool to one daemon; every domain client sends through it."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def send(
        self,
        endpoint: Endpoint,
        *,
        path: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        checked: bool = True,
    ) -> httpx.Response:
        """The response to one request; :class:`ApiError` for an error answer unless not
        ``checked`` (tests that look at statuses and bodies themselves)."""
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        try:
            response = await self.http.request(
                endpoint.method,
                endpoint.url(**(path or {})),
                params=dict(query) if query else None,
                json=body,
                content=content,
                headers=dict(headers) if headers else None,
                **extra,
            )
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        return check(response) if checked else response

    async def json(self, endpoint: Endpoint, **kwargs: Any) -> Any:
        return (await self.send(endpoint, **kwargs)).json()


class AsyncNodeClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def status(self) -> Status:
        return Status.model_validate(await self._t.json(E.STATUS))

    async def config(self) -> ConfigView:
        return ConfigView.model_validate(await self._t.json(E.CONFIG))

    async def health(self) -> bool:
        return bool((await self._t.json(E.HEALTH))["ok"])

    async def rotate_token(self, scope: str = "admin") -> TokenRotated:
        body = {"scope": scope}  # checked by the daemon (422), as the in-process core checks it
        return TokenRotated.model_validate(await self._t.json(E.API_TOKEN_ROTATE, body=body))

    async def metrics_text(self) -> bytes:
        return (await self._t.send(E.METRICS)).content


class AsyncPeersClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def list(self) -> Peers:
        return Peers.model_validate(await self._t.json(E.PEERS))

    async def find(
        self, *, min_mem_gb: float | None = None, min_gflops: float | None = None, gpu: bool | None = None
    ) -> Peers:
        query = params(min_mem_gb=min_mem_gb, min_gflops=min_gflops, gpu=gpu)
        return Peers.model_validate(await self._t.json(E.PEERS_FIND, query=query, timeout_s=120.0))

    async def get(self, peer_id: str) -> Peer:
        return Peer.model_validate(await self._t.json(E.PEER, path={"peer_id": peer_id}))

    async def connect(self, addr: str) -> Peer:
        return Peer.model_validate(await self._t.json(E.PEERS_CONNECT, body={"addr": addr}))

    async def perf(self, peer_id: str, *, payload_bytes: int | None = None) -> Perf:
        query = params(payload_bytes=payload_bytes)
        answer = await self._t.json(E.PEER_PERF, path={"peer_id": peer_id}, query=query, timeout_s=120.0)
        return Perf.model_validate(answer)


class AsyncHardwareClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def get(self) -> Hardware:
        return Hardware.model_validate(await self._t.json(E.HARDWARE))

    async def start_profile(self, mode: str = "quick") -> ProfileJob:
        return ProfileJob.model_validate(await self._t.json(E.PROFILE_START, body={"mode": mode}))

    async def profile_job(self) -> ProfileJob:
        return ProfileJob.model_validate(await self._t.json(E.PROFILE_JOB))


class AsyncKeysClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def new_key(self, name: str) -> TrustedKey:
        body = NewKey(name=name).model_dump()
        return TrustedKey.model_validate(await self._t.json(E.KEYS_NEW, body=body))

    async def own_keys(self) -> TrustedKeys:
        return TrustedKeys.model_validate(await self._t.json(E.KEYS))

    async def trust(self, public_key: str, name: str) -> TrustedKey:
        body = TrustRequest(public_key=public_key, name=name).model_dump()
        return TrustedKey.model_validate(await self._t.json(E.TRUST_ADD, body=body))

    async def trusted(self) -> TrustedKeys:
        return TrustedKeys.model_validate(await self._t.json(E.TRUST))

    async def untrust(self, name: str) -> TrustedKey:
        return TrustedKey.model_validate(await self._t.json(E.TRUST_REMOVE, path={"name": name}))


class AsyncAuditClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def tail(
        self, *, limit: int = 100, after: int | None = None, kind: str | None = None
    ) -> AuditRecords:
        query = params(limit=limit, after=after, kind=kind)
        return AuditRecords.model_validate(await self._t.json(E.AUDIT, query=query))

    async def verify(self) -> AuditVerification:
        return AuditVerification.model_validate(await self._t.json(E.AUDIT_VERIFY, timeout_s=600.0))


class AsyncModelsClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def publish(self, request: PublishRequest) -> ModelView:
        body = request.model_dump(exclude_none=True)
        return ModelView.model_validate(await self._t.json(E.MODELS_PUBLISH, body=body, timeout_s=600.0))

    async def fetch(self, cid: str, *, timeout_s: float = 7 * 86400.0) -> ModelView:
        body = FetchRequest(cid=cid).model_dump()
        return ModelView.model_validate(await self._t.json(E.MODELS_FETCH, body=body, timeout_s=timeout_s))

    async def fetches(self) -> FetchProgressList:
        return FetchProgressList.model_validate(await self._t.json(E.MODELS_FETCHES))

    async def fetch_progress(self, cid: str) -> FetchProgressView:
        return FetchProgressView.model_validate(
            await self._t.json(E.MODELS_FETCH_PROGRESS, path={"cid": cid})
        )

    async def list(self) -> ModelList:
        return ModelList.model_validate(await self._t.json(E.MODELS))

    async def show(self, cid: str) -> ModelView:
        return ModelView.model_validate(await self._t.json(E.MODEL, path={"cid": cid}))

    async def remove(self, cid: str) -> ModelView:
        return ModelView.model_validate(await self._t.json(E.MODEL_REMOVE, path={"cid": cid}))

    async def pin(self, cid: str) -> ModelView:
        return ModelView.model_validate(await self._t.json(E.MODEL_PIN, path={"cid": cid}, body={}))

    async def analysis(self, cid: str, dims: Mapping[str, int] | None = None) -> dict[str, Any]:
        answer = await self._t.json(
            E.MODEL_ANALYSIS, path={"cid": cid}, query=dict(dims or {}), timeout_s=300.0
        )
        return dict(answer)

    async def variants(self, cid: str) -> dict[str, Any]:
        return dict(await self._t.json(E.MODEL_VARIANTS, path={"cid": cid}))

    async def build_variant(self, cid: str, variant: str) -> dict[str, Any]:
        body = {"variant": variant}
        return dict(await self._t.json(E.MODEL_VARIANT_BUILD, path={"cid": cid}, body=body, timeout_s=600.0))

    async def bench(self, cid: str, request: BenchRequest) -> dict[str, Any]:
        body = request.model_dump()
        return dict(await self._t.json(E.MODEL_BENCH, path={"cid": cid}, body=body, timeout_s=3600.0))


class AsyncInferenceClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def infer(
        self, cid: str, inputs: Mapping[str, np.ndarray[Any, Any]], options: InferOptions | None = None
    ) -> Arrays:
        """Outputs of ``cid`` for ``inputs`` (sent and answered as .npz, so dtypes survive)."""
        from accel_node.runtime.codecs import TensorLimits, decode_outputs, encode_npz

        raw = await self.infer_raw(cid, encode_npz(inputs), NPZ, options, accept=NPZ)
        kind = raw.media_type.split(";")[0].strip().lower()
        return decode_outputs(raw.content, kind, TensorLimits(**RESPONSE_LIMITS))

    async def infer_raw(
        self,
        cid: str,
        content: bytes,
        content_type: str,
        options: InferOptions | None = None,
        *,
        accept: str = "application/json",
    ) -> RawOutput:
        """An encoded request body (JSON, .npz or .npy) in, the daemon's encoded answer out."""
        timeout = (options.timeout_s if options and options.timeout_s else DEFAULT_TIMEOUT_S) + 5.0
        response = await self._t.send(
            E.INFER,
            path={"cid": cid},
            query=infer_params(options),
            content=content,
            headers={"Content-Type": content_type, "Accept": accept},
            timeout_s=timeout,
        )
        return RawOutput(response.content, response.headers.get("content-type", ""))

    async def measurements(self, cid: str | None = None, *, limit: int = 1000) -> dict[str, Any]:
        return dict(await self._t.json(E.MEASUREMENTS, query=params(cid=cid, limit=limit)))

    async def runtime(self) -> dict[str, Any]:
        return dict(await self._t.json(E.RUNTIME))


class AsyncShardsClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def plan(self, request: PlanRequest) -> dict[str, Any]:
        body = request.model_dump(exclude_none=True)
        return dict(await self._t.json(E.SHARDS_PLAN, body=body, timeout_s=600.0))

    async def serve(self, request: ServeRequest) -> dict[str, Any]:
        body = request.model_dump(exclude_none=True)
        return dict(await self._t.json(E.SHARDS_SERVE, body=body, timeout_s=600.0))

    async def unserve(self, plan: str, stage: int) -> dict[str, Any]:
        body = UnserveRequest(plan=plan, stage=stage).model_dump()
        return dict(await self._t.json(E.SHARDS_UNSERVE, body=body))

    async def list(self, *, cid: str | None = None, lookup: bool = True) -> dict[str, Any]:
        query = params(cid=cid, lookup=lookup)
        return dict(await self._t.json(E.SHARDS, query=query, timeout_s=120.0))


class AsyncPolicyClient:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def get(self) -> PolicyView:
        return PolicyView.model_validate(await self._t.json(E.POLICY))

    async def put(self, update: PolicyPut) -> PolicyView:
        body = update.model_dump(mode="json", exclude_none=True)
        return PolicyView.model_validate(await self._t.json(E.POLICY_PUT, body=body))


class AsyncClient:
    """A daemon's core API over HTTP: ``node``, ``peers``, ``hardware``, ``keys``, ``audit``, ``models``,
    ``inference``, ``shards``, ``policy``. Errors are :class:`accel_node.errors.ApiError` with the daemon's
    status and code; an unreachable daemon is :class:`accel_node.errors.DaemonNotRunningError`.
    A ``token`` of None sends no ``Authorization`` header (what a test of the 401 answers needs)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.http = httpx.AsyncClient(
            base_url=url, headers=auth_headers(token), timeout=timeout_s, transport=transport
        )
        self.transport = AsyncTransport(self.http, url)
        self.node = AsyncNodeClient(self.transport)
        self.peers = AsyncPeersClient(self.transport)
        self.hardware = AsyncHardwareClient(self.transport)
        self.keys = AsyncKeysClient(self.transport)
        self.audit = AsyncAuditClient(self.transport)
        self.models = AsyncModelsClient(self.transport)
        self.inference = AsyncInferenceClient(self.transport)
        self.shards = AsyncShardsClient(self.transport)
        self.policy = AsyncPolicyClient(self.transport)

    @classmethod
    def for_home(cls, home: NodeHome, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncClient:
        """A client of the daemon running on ``home`` (found through its ``api.json``)."""
        url, token = daemon_address(home)
        return cls(url, token, timeout_s=timeout_s)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
