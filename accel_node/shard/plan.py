"""Shard plans: how a model was cut into stages, signed by the node that cut it, verifiable by anyone.

Wire format: a CBOR map (canonical encoding) ``{"plan": {...}, "pubkey": bytes, "sig": bytes}``. ``sig`` is
the planner's libp2p signature over ``DOMAIN`` + the canonical CBOR of the plan map; ``pubkey`` is the
planner's libp2p public key (protobuf encoding), whose peer id must be the plan's ``planner``. The plan map::

    v        1
    model    text    CID of the model the plan is for (as the caller names it, e.g. its package CID)
    cuts     [uint]  node positions of the cuts (see accel_node.shard.partition)
    dims     {text: uint}   dim values the figures are for
    weights  [float] relative throughput of the peer of each stage when the cuts were balanced
    created  uint    unix time (s)
    planner  text    peer id (base58) of the planning node
    stages   [{cid, start, end, inputs, outputs, carried, boundary, flops, param_bytes, activation_bytes}]
             tensors as {name, dtype, shape}; shape items are uint, text (a symbolic dim) or null

Not a :mod:`p2p.records` record: those are mutable, expiring and sequence-numbered with a 16 KiB bound,
while a plan is immutable content (stored and fetched by its CID, :func:`plan_cid`) and the plan of a deep
model with many boundary tensors can be larger. The envelope follows the same rules.

:func:`decode_plan` checks bounds, structure and signature; :func:`verify_plan` also re-extracts the
stages from the model at the plan's cuts and refuses the plan unless every stage (CID, boundary, figures)
is the same. Both are CPU-bound (verify_plan runs shape inference): call them off the event loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import cbor2
import onnx
from libp2p.crypto.keys import KeyPair, PublicKey
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from accel_node.models.manifest import TensorSpec
from accel_node.shard.errors import PartitionError, PlanError
from accel_node.shard.limits import MAX_STAGES
from accel_node.shard.partition import Partition, Stage, profile_graph
from p2p.codec.cbor import CborMap, as_int, as_list, as_text, describe, load_map
from p2p.content import CID, InvalidCIDError, compute_cid
from p2p.records import MAX_PUBKEY_BYTES, MAX_SIG_BYTES

DOMAIN = b"accel-node/shard-plan/v1\n"
FORMAT_VERSION = 1
MAX_PLAN_BYTES = 1024 * 1024
MAX_TENSORS = 1024  # per list (inputs, outputs, carried, boundary) of a stage
MAX_NAME_CHARS = 1024
MAX_RANK = 32
MAX_DIMS = 32
MAX_DIM_VALUE = 1 << 31
MAX_UINT = (1 << 63) - 1
PLAN_KEYS = frozenset({"v", "model", "cuts", "dims", "weights", "created", "planner", "stages"})
STAGE_KEYS = frozenset(
    {
        "cid",
        "start",
        "end",
        "inputs",
        "outputs",
        "carried",
        "boundary",
        "flops",
        "param_bytes",
        "activation_bytes",
    }
)


@dataclass(frozen=True)
class StagePlan:
    """One stage as the plan describes it (see :class:`accel_node.shard.partition.Stage`)."""

    index: int
    cid: str
    start: int
    end: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    carried: tuple[TensorSpec, ...]
    boundary: tuple[str, ...]
    flops: float
    param_bytes: int
    activation_bytes: int

    @classmethod
    def from_stage(cls, stage: Stage) -> StagePlan:
        return cls(
            stage.index,
            stage.cid,
            stage.start,
            stage.end,
            stage.inputs,
            stage.outputs,
            stage.carried,
            stage.boundary,
            float(stage.flops),
            stage.param_bytes,
            stage.activation_bytes,
        )

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes

    def to_map(self) -> dict[str, Any]:
        def specs(items: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
            return [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in items]

        return {
            "cid": self.cid,
            "start": self.start,
            "end": self.end,
            "inputs": specs(self.inputs),
            "outputs": specs(self.outputs),
            "carried": specs(self.carried),
            "boundary": list(self.boundary),
            "flops": self.flops,
            "param_bytes": self.param_bytes,
            "activation_bytes": self.activation_bytes,
        }


@dataclass(frozen=True)
class ShardPlan:
    """A shard plan (only :func:`make_plan`, :func:`decode_plan` and :func:`verify_plan` make these)."""

    model_cid: str
    stages: tuple[StagePlan, ...]
    cuts: tuple[int, ...]
    dims: dict[str, int]
    weights: tuple[float, ...]
    created: int
    planner: str  # peer id, base58

    @property
    def stage_cids(self) -> tuple[str, ...]:
        return tuple(s.cid for s in self.stages)

    def to_map(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "model": self.model_cid,
            "cuts": list(self.cuts),
            "dims": dict(self.dims),
            "weights": list(self.weights),
            "created": self.created,
            "planner": self.planner,
            "stages": [s.to_map() for s in self.stages],
        }


def make_plan(partition: Partition, *, model_cid: str, planner: ID, created: int | None = None) -> ShardPlan:
    """The plan of ``partition`` of the model named ``model_cid``, made by the node ``planner``."""
    plan = ShardPlan(
        model_cid=model_cid,
        stages=tuple(StagePlan.from_stage(s) for s in partition.stages),
        cuts=tuple(partition.cuts),
        dims=dict(partition.dims),
        weights=tuple(partition.weights),
        created=int(time.time()) if created is None else created,
        planner=planner.to_base58(),
    )
    return parse_plan_map(plan.to_map())  # never hand out a plan its own decoder would refuse


def _signed_bytes(plan_map: dict[str, Any]) -> bytes:
    return DOMAIN + cbor2.dumps(plan_map, canonical=True)


def sign_plan(plan: ShardPlan, key_pair: KeyPair, *, max_bytes: int = MAX_PLAN_BYTES) -> bytes:
    """The signed plan bytes; ``key_pair`` must be the planner's."""
    if ID.from_pubkey(key_pair.public_key).to_base58() != plan.planner:
        raise PlanError(f"the plan names planner {plan.planner}; the signing key is another peer's")
    body = plan.to_map()
    parse_plan_map(body)
    raw: bytes = cbor2.dumps(
        {
            "plan": body,
            "pubkey": key_pair.public_key.serialize(),
            "sig": key_pair.private_key.sign(_signed_bytes(body)),
        },
        canonical=True,
    )
    if len(raw) > max_bytes:
        raise PlanError(f"the signed plan is {len(raw)} bytes; the limit is {max_bytes}")
    return raw


def plan_cid(raw: bytes) -> str:
    """The content address of signed plan bytes (a UnixFS CIDv1, as for any other content)."""
    return str(compute_cid(raw))


# -- decoding ----------------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """A finite float (integers up to 2**63 accepted), else None."""
    if isinstance(value, bool) or not isinstance(value, float | int):
        return None
    if isinstance(value, int) and abs(value) > MAX_UINT:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _cid(value: object, where: str) -> str:
    text = as_text(value, where, min_len=1, max_len=256, error=PlanError)
    try:
        CID.parse(text)
    except InvalidCIDError as exc:
        raise PlanError(f"{where} is not a CID: {exc}") from exc
    return text


def _name(value: object, where: str, limit: int = MAX_NAME_CHARS) -> str:
    return as_text(value, where, min_len=1, max_len=limit, error=PlanError)


def _specs(value: object, where: str) -> tuple[TensorSpec, ...]:
    specs = []
    for item in as_list(value, where, MAX_TENSORS, PlanError):
        fields = CborMap(item, what=f"{where} tensor", error=PlanError)
        fields.require_exactly({"name", "dtype", "shape"})
        name = fields.text("name", min_len=1, max_len=MAX_NAME_CHARS)
        dtype = fields.text("dtype", min_len=1, max_len=32)
        shape = fields.list_("shape", max_len=MAX_RANK)
        for d in shape:
            if isinstance(d, str):
                _name(d, f"{where} tensor {name!r} dim name", 128)
            elif d is not None:
                as_int(d, f"{where} tensor {name!r} dims", max_value=MAX_UINT, error=PlanError)
        specs.append(TensorSpec(name, dtype, tuple(shape)))
    return tuple(specs)


def _stage(data: object, index: int) -> StagePlan:
    where = f"plan stage {index}"
    fields = CborMap(data, what=where, error=PlanError)
    fields.require_exactly(STAGE_KEYS)
    flops = _number(fields.get("flops"))
    if flops is None or flops < 0:
        raise PlanError(f"{where}: flops must be a finite non-negative number")
    boundary = fields.list_("boundary", max_len=MAX_TENSORS)
    return StagePlan(
        index=index,
        cid=_cid(fields.get("cid"), f"{where} cid"),
        start=fields.integer("start", max_value=MAX_UINT),
        end=fields.integer("end", max_value=MAX_UINT),
        inputs=_specs(fields.get("inputs"), f"{where} inputs"),
        outputs=_specs(fields.get("outputs"), f"{where} outputs"),
        carried=_specs(fields.get("carried"), f"{where} carried"),
        boundary=tuple(_name(name, f"{where} boundary name") for name in boundary),
        flops=flops,
        param_bytes=fields.integer("param_bytes", max_value=MAX_UINT),
        activation_bytes=fields.integer("activation_bytes", max_value=MAX_UINT),
    )


def parse_plan_map(data: object) -> ShardPlan:
    """Structure and bounds checks of a plan map (no signature, no model)."""
    fields = CborMap(data, what="plan", error=PlanError)
    fields.require_exactly(PLAN_KEYS)
    version = fields.get("v")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise PlanError(f"unsupported plan version {describe(version)}")
    stages = fields.list_("stages", max_len=MAX_STAGES)
    if not stages:
        raise PlanError("plan has no stages")
    cuts = tuple(
        as_int(c, "plan cut", max_value=MAX_UINT, error=PlanError)
        for c in fields.list_("cuts", max_len=MAX_STAGES)
    )
    if len(cuts) != len(stages) - 1 or any(a >= b for a, b in zip((0, *cuts), cuts, strict=False)):
        raise PlanError("plan cuts must be strictly increasing positions, one fewer than the stages")
    dims_map = fields.map_("dims", max_len=MAX_DIMS)
    dims = {
        _name(k, "plan dim name", 128): as_int(v, f"plan dim {k}", max_value=MAX_DIM_VALUE, error=PlanError)
        for k, v in dims_map.data.items()
    }
    if any(v < 1 for v in dims.values()):
        raise PlanError("plan dims must be positive")
    weights = fields.list_("weights", max_len=MAX_STAGES)
    values = [_number(w) for w in weights]
    if len(values) != len(stages) or not all(v is not None and v > 0 for v in values):
        raise PlanError("plan weights must be one finite positive number per stage")
    planner = fields.text("planner", min_len=1, max_len=128)
    try:
        ID.from_base58(planner)
    except Exception as exc:  # base58 and multihash decoders raise assorted errors
        raise PlanError("plan planner is not a peer id") from exc
    parsed = tuple(_stage(item, i) for i, item in enumerate(stages))
    bounds = (0, *cuts)
    for stage, start in zip(parsed, bounds, strict=True):
        if stage.start != start or stage.end <= start:
            raise PlanError(f"plan stage {stage.index} does not start at its cut")
    for stage, following in pairwise(parsed):
        if stage.end != following.start:
            raise PlanError(f"plan stage {stage.index} does not end where stage {following.index} starts")
    return ShardPlan(
        model_cid=_cid(fields.get("model"), "plan model"),
        stages=parsed,
        cuts=cuts,
        dims=dims,
        weights=tuple(float(v) for v in values if v is not None),
        created=fields.integer("created", max_value=MAX_UINT),
        planner=planner,
    )


def decode_plan(
    raw: bytes,
    *,
    expect_model_cid: str | None = None,
    expect_planner: ID | None = None,
    max_bytes: int = MAX_PLAN_BYTES,
) -> ShardPlan:
    """Parse signed plan bytes and check bounds, structure and signature (not the stages: see verify_plan)."""
    outer = load_map(raw, max_bytes=max_bytes, what="plan", error=PlanError)
    if set(outer) != {"plan", "pubkey", "sig"}:
        raise PlanError("signed plan must be a map of exactly plan, pubkey and sig")
    pubkey = outer.bytes_("pubkey", max_len=MAX_PUBKEY_BYTES)
    sig = outer.bytes_("sig", max_len=MAX_SIG_BYTES)
    plan = parse_plan_map(outer.get("plan"))
    try:
        public_key: PublicKey = deserialize_public_key(pubkey)
    except Exception as exc:
        raise PlanError("plan has a malformed public key") from exc
    if ID.from_pubkey(public_key).to_base58() != plan.planner:
        raise PlanError("plan is signed by a key that is not the planner's")
    try:
        valid = public_key.verify(_signed_bytes(outer.get("plan")), sig)
    except Exception:  # malformed signatures raise instead of returning False
        valid = False
    if not valid:
        raise PlanError("plan signature is invalid")
    if expect_planner is not None and plan.planner != expect_planner.to_base58():
        raise PlanError(f"plan is from {plan.planner}, expected {expect_planner.to_base58()}")
    if expect_model_cid is not None and plan.model_cid != expect_model_cid:
        raise PlanError(f"plan is for model {plan.model_cid}, expected {expect_model_cid}")
    return plan


def verify_plan(
    raw: bytes,
    model: onnx.ModelProto,
    *,
    expect_model_cid: str | None = None,
    expect_planner: ID | None = None,
    max_bytes: int = MAX_PLAN_BYTES,
) -> ShardPlan:
    """:func:`decode_plan`, then re-extract the stages of ``model`` at the plan's cuts and dims and refuse
    the plan unless every stage matches (CID, node range, boundary tensors and figures)."""
    return verified_stages(
        raw, model, expect_model_cid=expect_model_cid, expect_planner=expect_planner, max_bytes=max_bytes
    )[0]


def verified_stages(
    raw: bytes,
    model: onnx.ModelProto,
    *,
    expect_model_cid: str | None = None,
    expect_planner: ID | None = None,
    max_bytes: int = MAX_PLAN_BYTES,
) -> tuple[ShardPlan, list[Stage]]:
    """:func:`verify_plan` that also returns the re-extracted stages (their bytes are the plan's)."""
    plan = decode_plan(
        raw, expect_model_cid=expect_model_cid, expect_planner=expect_planner, max_bytes=max_bytes
    )
    try:
        profile = profile_graph(model, plan.dims)
        if profile.dims != plan.dims:
            raise PlanError(f"plan dims {plan.dims} are not the model's (resolved: {profile.dims})")
        stages = profile.extract(plan.cuts)
    except PartitionError as exc:
        raise PlanError(f"plan does not fit the model: {exc}") from exc
    if len(stages) != len(plan.stages):
        raise PlanError(f"plan lists {len(plan.stages)} stages; its cuts give {len(stages)}")
    for claimed, stage in zip(plan.stages, stages, strict=True):
        actual = StagePlan.from_stage(stage)
        if claimed.cid != actual.cid:
            raise PlanError(
                f"plan stage {claimed.index} has CID {claimed.cid}; the model's stage there is {actual.cid}"
            )
        if claimed != actual:
            fields = [f for f in claimed.to_map() if claimed.to_map()[f] != actual.to_map()[f]]
            raise PlanError(f"plan stage {claimed.index} differs from the model's in {', '.join(fields)}")
    return plan, list(stages)
