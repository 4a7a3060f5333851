"""Sharded inference on a node: plans, the stages it serves, and requests it routes through peers.

- **Plan** (``plan``): partition a model this node holds into stages balanced to the chosen peers'
  measured throughput (capability records: ``peak_gflops``) within their free memory, sign the plan
  with the node key, and add it as content (pinned, provided), so any peer can fetch it by CID.
- **Serve** (``serve``): fetch a plan by CID, verify it against the local copy of the model (the
  stages are re-extracted here: a plan whose stage CIDs differ is refused), load the stage into
  the stage server, announce it in the DHT (``/accel/shard/<model-cid>/<stage>``) and in the
  capability record (``shards``: plan, stage, load). Served stages are remembered in the store and
  served again after a restart (in the background, once the service has started).
- **Route** (``infer``): for each stage, replicas are the peers whose verified capability record
  says they serve that plan's stage (DHT providers first, then connected peers), ranked by what this
  node observed before what they claim (:mod:`accel_node.shard.observed`: audited replicas first, by
  observed latency; merely claimed ones after, by expected time from their bounded claims: the
  stage's FLOPs at their measured throughput, scaled by load, plus RTT); the router
  pushes activations stage to stage and replays on another replica when one fails (see
  :mod:`accel_node.shard.router`). With no replica left for a stage, the stage is re-placed here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import onnx
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from accel_node.capability import CapabilityBody, CapabilityService, ShardEntry
from accel_node.config import ShardSection
from accel_node.errors import AccelNodeError
from accel_node.hardware import HardwareService
from accel_node.models.manifest import TensorSpec
from accel_node.models.service import ModelService, normal_cid
from accel_node.network import PeerNetwork
from accel_node.policy.quota import AssignQuota
from accel_node.runtime.errors import RuntimeFailure
from accel_node.runtime.library import ModelLibrary
from accel_node.shard import directory
from accel_node.shard.assign import ASSIGN_PROTOCOL, assign, assignment_handler
from accel_node.shard.errors import AssignmentError, PlanError, ShardError, ShardRouteError
from accel_node.shard.observed import Candidate, rank
from accel_node.shard.partition import Stage, partition
from accel_node.shard.plan import (
    MAX_PLAN_BYTES,
    ShardPlan,
    decode_plan,
    make_plan,
    sign_plan,
    verified_stages,
)
from accel_node.shard.router import LocalStages, ShardRouter
from accel_node.shard.served import ServedStages
from accel_node.shard.server import StageServer
from accel_node.store import AsyncStore, PeerRecord
from p2p.dht import RecordDHT
from p2p.tasks import FailureHook, OwnedTasks

log = logging.getLogger(__name__)

DEFAULT_GFLOPS = 10.0  # a peer that has not profiled yet still gets a (small) share
MEMORY_SHARE = 0.5  # at most this fraction of a peer's free memory is planned for its stage
REANNOUNCE_S = 600.0
ROUTE_TTL_S = 10.0  # routes are looked up again after this; the router skips failed replicas meanwhile


class ShardService:
    """Plans, serving and routing of sharded inference for one node.

    While :meth:`run` runs it owns one background task: serving the remembered stages again after
    a restart (started after ``started()``, since it may wait on the DHT); a stage that cannot be
    served is a warning, and a failure of the task itself is logged and passed to ``on_failure``.
    """

    def __init__(
        self,
        *,
        key_pair: KeyPair,
        dht: RecordDHT,
        network: PeerNetwork,
        store: AsyncStore,
        models: ModelService,
        library: ModelLibrary,
        hardware: HardwareService,
        capabilities: CapabilityService,
        server: StageServer,
        router: ShardRouter,
        settings: ShardSection,
        served: ServedStages | None = None,
        on_failure: FailureHook | None = None,
        allow_assign: Callable[[ID], bool] | None = None,
        quota: AssignQuota | None = None,
    ) -> None:
        self._allow_assign = allow_assign
        self._quota = quota
        self._assign_lock = trio.Lock()  # one assignment at a time: a quota cannot be overspent in parallel
        self._key_pair = key_pair
        self._dht = dht
        self._network = network
        self._store = store
        self._models = models
        self._library = library
        self._hardware = hardware
        self._capabilities = capabilities
        self.server = server
        self.router = router
        self._settings = settings
        self.local_id: ID = network.host.get_id()
        self.served = served or ServedStages(server)
        self._routes: dict[str, tuple[float, ShardPlan, list[list[ID]]]] = {}  # plan cid -> (expiry, ...)
        self._referees: dict[str, LocalStages | None] = {}  # plan cid -> stages to referee with
        self._tasks = OwnedTasks("shard", on_failure=on_failure)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept assignments, serve the remembered stages again (in the background: nothing that
        waits on the network runs before ``started()``) and re-announce served stages until cancelled."""
        if self._settings.accept_assignments:
            handler = assignment_handler(self.serve_assigned, allow=self._allow_assign or (lambda _: True))
            self._network.host.set_stream_handler(ASSIGN_PROTOCOL, handler)
        async with self._tasks.open():
            self._tasks.spawn("serve-remembered", self._serve_remembered)
            task_status.started()
            while True:
                await trio.sleep(REANNOUNCE_S)
                for (_, stage), model_cid in list(self.served):
                    await directory.announce(self._dht, model_cid, stage)

    async def _serve_remembered(self) -> None:
        """Serve every stage the store remembers as served (before the last stop)."""
        for row in await self._store.list_served():
            try:
                await self.serve(row.model_cid, row.stage, row.plan_cid)
            except (AccelNodeError, onnx.checker.ValidationError, OSError) as exc:
                # The model may have been removed, or the plan cannot be fetched now: the node still
                # starts; the stage is not served (and not forgotten: `shard serve` again or unserve).
                log.warning(
                    "could not serve a remembered stage again", extra={**row.as_dict(), "error": str(exc)}
                )

    def entries(self) -> list[ShardEntry]:
        """What the capability record says about the stages served here."""
        return self.served.entries()

    # -- planning ----------------------------------------------------------------------------

    async def plan(
        self, cid: str, *, stages: int, peers: Sequence[str] | None = None, assign_stages: bool = False
    ) -> dict[str, Any]:
        """Partition model ``cid`` into ``stages`` stages for ``peers`` (default: this node and the
        connected peers with the highest measured throughput), sign and publish the plan; with
        ``assign_stages``, ask each peer to serve its stage (they must accept assignments)."""
        model_cid = normal_cid(cid)
        path, _ = await self._library.resolve(model_cid)
        chosen = await self._choose_peers(stages, peers)
        weights = [self._gflops(body) for _, body in chosen]
        caps = [self._memory_cap(body) for _, body in chosen]

        def cut() -> Any:
            model = onnx.load(str(path))
            return partition(model, stages=stages, weights=weights, memory_caps=caps)

        parts = await trio.to_thread.run_sync(cut)
        plan = make_plan(parts, model_cid=model_cid, planner=self.local_id)
        raw = sign_plan(plan, self._key_pair)
        plan_cid = await self._models.add_content(raw)
        await self._store.save_plan(plan_cid, model_cid=model_cid, raw=raw, planner=plan.planner)
        log.info("shard plan made", extra={"model": model_cid, "plan": plan_cid, "stages": stages})
        view = self._plan_view(plan_cid, plan)
        view["placement"] = [str(peer) for peer, _ in chosen]
        if assign_stages:
            view["assignments"] = await self._assign(model_cid, plan_cid, [peer for peer, _ in chosen])
        return view

    async def _assign(self, model_cid: str, plan_cid: str, placement: list[ID]) -> list[dict[str, Any]]:
        """Ask every placed peer (this node included) to serve its stage; each outcome is reported."""
        outcomes: list[dict[str, Any]] = []
        for stage, peer in enumerate(placement):
            outcome: dict[str, Any] = {"stage": stage, "peer": str(peer)}
            try:
                if peer == self.local_id:
                    outcome["stage_cid"] = (await self.serve(model_cid, stage, plan_cid))["stage_cid"]
                else:
                    outcome["stage_cid"] = await assign(
                        self._network.host, peer, model=model_cid, plan=plan_cid, stage=stage
                    )
            except (ShardError, RuntimeFailure) as exc:
                outcome["error"] = str(exc)
            outcomes.append(outcome)
        return outcomes

    async def _choose_peers(
        self, stages: int, peers: Sequence[str] | None
    ) -> list[tuple[ID, CapabilityBody | None]]:
        own = (self.local_id, await self._capabilities.body())
        records = {r.peer_id: r for r in await self._store.list_peers()}
        if peers:
            chosen: list[tuple[ID, CapabilityBody | None]] = []
            for text in peers:
                peer = self.local_id if text in ("self", str(self.local_id)) else _peer_id(text)
                chosen.append(own if peer == self.local_id else (peer, _capability(records.get(str(peer)))))
            if len(chosen) != stages:
                raise PlanError(f"{stages} stages need {stages} peers; {len(chosen)} were given")
            return chosen
        candidates = [
            (peer, _capability(records.get(str(peer)))) for peer in self._network.host.get_connected_peers()
        ]
        candidates.sort(key=lambda item: -self._gflops(item[1]))
        if len(candidates) + 1 < stages:
            raise PlanError(
                f"{stages} stages need {stages} peers; this node has {len(candidates)} connected peer(s)"
            )
        return [own, *candidates][:stages]

    @staticmethod
    def _gflops(body: CapabilityBody | None) -> float:
        if body is None or body.hw.peak_gflops is None:
            return DEFAULT_GFLOPS
        return max(1.0, body.hw.peak_gflops)

    @staticmethod
    def _memory_cap(body: CapabilityBody | None) -> int:
        if body is None:
            return 1 << 62  # unknown: do not constrain
        return int(body.hw.mem_free_gb * 1e9 * MEMORY_SHARE)

    # -- serving -----------------------------------------------------------------------------

    async def serve(self, cid: str, stage: int, plan_cid: str) -> dict[str, Any]:
        """Serve stage ``stage`` of plan ``plan_cid`` (of model ``cid``, held and verified here)."""
        model_cid = normal_cid(cid)
        raw = await self._plan_bytes(plan_cid)
        path, _ = await self._library.resolve(model_cid)

        def verify() -> tuple[ShardPlan, list[Stage]]:
            return verified_stages(raw, onnx.load(str(path)), expect_model_cid=model_cid)

        plan, stages = await trio.to_thread.run_sync(verify)
        if not 0 <= stage < len(stages):
            raise PlanError(f"plan {plan_cid} has {len(stages)} stages; there is no stage {stage}")
        await self.server.serve(plan_cid, stage, stages[stage].model_bytes, stages[stage])
        self.served.add(plan_cid, stage, model_cid)
        await self._store.set_served(plan_cid, stage, model_cid=model_cid, served=True)
        await directory.announce(self._dht, model_cid, stage)
        self._capabilities.republish_soon()
        return {"model": model_cid, "plan": plan_cid, "stage": stage, "stage_cid": plan.stages[stage].cid}

    async def serve_assigned(self, cid: str, stage: int, plan_cid: str, assigner: ID) -> dict[str, Any]:
        """:meth:`serve` for an assigning peer: the plan is fetched within the assigner's quota, pinned
        only once complete, and unpinned again if serving fails (finding 9)."""
        async with self._assign_lock:
            known = await self._store.get_plan(plan_cid) is not None
            if not known:
                await self._plan_bytes(plan_cid, assigner=assigner)
            try:
                return await self.serve(cid, stage, plan_cid)
            except BaseException:
                if not known:
                    with trio.CancelScope(shield=True):
                        await self._store.forget_plan(plan_cid)
                        await self._models.drop_content(plan_cid)
                raise

    async def unserve(self, plan_cid: str, stage: int) -> bool:
        model_cid = self.served.remove(plan_cid, stage)
        self.server.unserve(plan_cid, stage)
        if model_cid is not None:
            await self._store.set_served(plan_cid, stage, model_cid=model_cid, served=False)
            self._capabilities.republish_soon()
        return model_cid is not None

    async def _plan_bytes(self, plan_cid: str, *, assigner: ID | None = None) -> bytes:
        row = await self._store.get_plan(plan_cid)
        if row is not None:
            return row.raw
        max_size = MAX_PLAN_BYTES
        if assigner is not None and self._quota is not None:
            max_size = min(max_size, await self._quota.left(str(assigner)))
            if max_size <= 0:
                raise AssignmentError(f"{assigner} has used up its assignment quota on this node")
        raw = await self._models.get_content(plan_cid, max_size=max_size)
        try:
            plan = decode_plan(raw)
        except PlanError:
            await self._models.drop_content(plan_cid)
            raise
        if assigner is not None and self._quota is not None:
            await self._quota.record(plan_cid, str(assigner), len(raw))
        await self._store.save_plan(plan_cid, model_cid=plan.model_cid, raw=raw, planner=plan.planner)
        return raw

    # -- listing -----------------------------------------------------------------------------

    async def listing(self, *, model_cid: str | None = None, lookup: bool = True) -> dict[str, Any]:
        """Plans known here, each stage with the peers serving it (from verified capability records)."""
        plans = []
        for row in await self._store.list_plans(model_cid):
            plan = decode_plan(row.raw)
            view = self._plan_view(row.plan_cid, plan)
            if lookup:
                for stage in view["stages"]:
                    replicas = await self.replicas(plan, row.plan_cid, stage["index"])
                    stage["peers"] = [str(p) for p in replicas]
            plans.append(view)
        served = [{"model": m, "plan": p, "stage": s} for (p, s), m in self.served]
        return {"plans": plans, "served": served, "loads": [vars(load) for load in self.server.loads()]}

    def _plan_view(self, plan_cid: str, plan: ShardPlan) -> dict[str, Any]:
        return {
            "plan": plan_cid,
            "model": plan.model_cid,
            "planner": plan.planner,
            "created": plan.created,
            "cuts": list(plan.cuts),
            "dims": plan.dims,
            "weights": list(plan.weights),
            "stages": [
                {
                    "index": s.index,
                    "cid": s.cid,
                    "flops": s.flops,
                    "param_bytes": s.param_bytes,
                    "inputs": [t.name for t in s.inputs],
                    "outputs": [t.name for t in s.outputs],
                }
                for s in plan.stages
            ],
        }

    # -- routing -----------------------------------------------------------------------------

    async def replicas(self, plan: ShardPlan, plan_cid: str, stage: int) -> list[ID]:
        """Peers serving ``plan``'s stage ``stage``, best first (:func:`~accel_node.shard.observed.rank`):
        replicas proven by an audit before ones that only claim the stage, each by the latency this
        node's router observed when it has a fresh observation, else by the claimed estimate: the
        stage's FLOPs at the peer's (bounded) claimed throughput, times (1 + its queue and busy
        fraction), plus the RTT. Peers caught lying are left out."""
        # DHT providers, then connected peers (a provider record may not have reached us yet); not
        # every peer ever met: each candidate costs a verified capability lookup.
        candidates = await directory.find(self._dht, plan.model_cid, stage)
        candidates += [p for p in self._network.host.get_connected_peers() if p not in candidates]
        flops = plan.stages[stage].flops

        def expected_ms(gflops: float, load: float, rtt_ms: float) -> float:
            return (1.0 + load) * flops / (gflops * 1e6) + rtt_ms

        found: list[Candidate] = []
        if (plan_cid, stage) in self.served:
            own = await self._capabilities.body()
            own_ms = expected_ms(self._gflops(own), self._queue(plan_cid, stage), 0.0)
            found.append(Candidate(self.local_id, own_ms, local=True))
        for peer in candidates:
            if peer == self.local_id:
                continue
            entry_body = await self._entry(peer, plan_cid, stage)
            if entry_body is None:
                continue
            entry, body = entry_body
            rtt = self._network.latency(peer)
            claimed_ms = expected_ms(
                self._gflops(body), entry.queue_depth + entry.busy, rtt[0] if rtt else 1e3
            )
            found.append(Candidate(peer, claimed_ms))
        return rank(found, self.router.observations, plan_cid, stage)

    def _queue(self, plan_cid: str, stage: int) -> float:
        for load in self.server.loads():
            if (load.model, load.stage) == (plan_cid, stage):
                return load.queued + min(1.0, load.busy_fraction)
        return 0.0

    async def _entry(self, peer: ID, plan_cid: str, stage: int) -> tuple[ShardEntry, CapabilityBody] | None:
        """The peer's verified capability record, if it says the peer serves the stage."""
        body = _capability(await self._capabilities.fetch(peer))
        if body is None:
            return None
        entry = next((e for e in body.shards if e.plan == plan_cid and e.stage == stage), None)
        return None if entry is None else (entry, body)

    async def route(self, plan_cid: str) -> tuple[ShardPlan, list[list[ID]]]:
        row = await self._store.get_plan(plan_cid)
        if row is None:
            raise PlanError(f"no shard plan {plan_cid} on this node")
        plan = decode_plan(row.raw)
        route = [await self.replicas(plan, plan_cid, s.index) for s in plan.stages]
        missing = [i for i, replicas in enumerate(route) if not replicas]
        if missing:
            raise ShardRouteError(
                f"no peer serves stage(s) {', '.join(map(str, missing))} of plan {plan_cid}; "
                "start them with 'accel-node shard serve'",
                stage=missing[0],
            )
        return plan, route

    async def referee_stages(self, plan_cid: str) -> LocalStages | None:
        """The plan's stages this node can run (to verify gossiped evidence); None: not held here."""
        return await self._referee_stages(plan_cid)

    async def _referee_stages(self, plan_cid: str) -> LocalStages | None:
        """The plan's stages extracted from the local model (verified against the plan), so that a
        spot check can referee a disagreement itself; None when the model is not held here."""
        if plan_cid in self._referees:
            return self._referees[plan_cid]
        row = await self._store.get_plan(plan_cid)
        if row is not None:
            try:
                path, _ = await self._library.resolve(row.model_cid)
                raw = row.raw
                _, stages = await trio.to_thread.run_sync(
                    lambda: verified_stages(raw, onnx.load(str(path)), expect_model_cid=row.model_cid)
                )
                self._referees[plan_cid] = {s.index: (s.model_bytes, s) for s in stages}
            except (RuntimeFailure, ShardError) as exc:
                log.info("no local referee for spot checks", extra={"plan": plan_cid, "error": str(exc)})
                self._referees[plan_cid] = None
        return self._referees.get(plan_cid)

    async def latest_plan(self, model_cid: str) -> str:
        rows = await self._store.list_plans(normal_cid(model_cid))
        if not rows:
            raise PlanError(f"no shard plan for model {model_cid}; make one with 'accel-node shard plan'")
        return rows[0].plan_cid

    async def infer(
        self, cid: str, inputs: Mapping[str, Any], *, plan_cid: str | None = None, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Run model ``cid`` through the pipeline of ``plan_cid`` (default: the newest plan).

        When no capable replica is left for a stage, the stage is re-placed on this node (if it
        holds the model) and the request is run once more.
        """
        chosen = plan_cid or await self.latest_plan(cid)
        try:
            return await self._infer_once(chosen, inputs, timeout_s)
        except ShardRouteError as exc:
            if exc.stage is None or not await self._replace_locally(cid, chosen, exc.stage):
                raise
        return await self._infer_once(chosen, inputs, timeout_s)

    async def _replace_locally(self, cid: str, plan_cid: str, stage: int) -> bool:
        """Serve ``stage`` here after every replica failed; whether that worked."""
        if (plan_cid, stage) in self.served:
            return False
        try:
            await self.serve(cid, stage, plan_cid)
        except (RuntimeFailure, ShardError, OSError) as exc:
            log.warning("could not re-place a stage here", extra={"plan": plan_cid, "stage": stage,
                                                                  "error": str(exc)})  # fmt: skip
            return False
        log.info("re-placed a stage on this node", extra={"plan": plan_cid, "stage": stage})
        return True

    async def _infer_once(self, chosen: str, inputs: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        cached = self._routes.get(chosen)
        if cached is not None and cached[0] > trio.current_time():
            _, plan, route = cached
        else:
            plan, route = await self.route(chosen)
            self._routes[chosen] = (trio.current_time() + ROUTE_TTL_S, plan, route)
        try:
            return await self.router.infer(
                route,
                chosen,
                dict(inputs),
                timeout_s=timeout_s,
                micro_batch=self._settings.micro_batch or None,
                signature=request_signature(plan),
                compress_fp16=self._settings.compress_fp16,
                local_stages=await self._referee_stages(chosen) if self._settings.spot_check_p > 0 else None,
            )
        except ShardError:
            self._routes.pop(chosen, None)  # look the replicas up again next time
            raise


def request_signature(plan: ShardPlan) -> tuple[TensorSpec, ...]:
    """The specs of a request's tensors: what the first stage reads and what it carries on to later
    stages (the frame at boundary 0 is the model's inputs); they tell whether it may be micro-batched."""
    first = plan.stages[0]
    return first.inputs + first.carried


def _peer_id(text: str) -> ID:
    try:
        return ID.from_base58(text)
    except Exception as exc:
        raise PlanError(f"invalid peer id {text[:80]!r}") from exc


def _capability(record: PeerRecord | None) -> CapabilityBody | None:
    if record is None or record.capability is None:
        return None
    try:
        return CapabilityBody.model_validate(record.capability)
    except ValueError:
        return None
