"""Stage assignments: a planner asks the peers of its plan to serve their stages.

Protocol ``/accel/shard/assign/1.0.0`` (one request per stream, over the Noise-authenticated
libp2p connection): the planner writes a length-prefixed canonical-CBOR map ``{"model", "plan",
"stage"}`` (at most :data:`MAX_MESSAGE_BYTES`); the peer answers ``{"ok": true, "stage_cid"}`` or
``{"ok": false, "error"}``. A peer accepts only when ``[shard] accept_assignments`` is on and its
policy allows the assigner the action ``assign`` (members, allow rules, tokens), and
then does exactly what ``accel-node shard serve`` does: it fetches the plan by CID and verifies it
against its own copy of the model (re-extracting the stages) before loading anything, so a
planner can make it spend memory on a model it already holds, and fetch and pin at most its quota
of plan bytes (``[policy] assign_quota_bytes``, :mod:`accel_node.policy.quota`), nothing else.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from accel_node.errors import AccelNodeError
from accel_node.shard.errors import AssignmentError
from p2p.codec.cbor import CborMap, load_map

log = logging.getLogger(__name__)

ASSIGN_PROTOCOL = TProtocol("/accel/shard/assign/1.0.0")
MAX_MESSAGE_BYTES = 4096
LENGTH = struct.Struct(">I")
ANSWER_TIMEOUT_S = 120.0  # the peer may have to fetch the plan and re-partition a large model

Serve = Callable[[str, int, str, ID], Awaitable[dict[str, Any]]]
DENIED = "denied by this node's policy"


def _allow_all(peer: ID) -> bool:
    return True


async def _read_exactly(stream: INetStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            raise AssignmentError(f"stream closed after {len(data)} of {size} bytes")
        data += chunk
    return data


async def _read_message(stream: INetStream) -> CborMap:
    (size,) = LENGTH.unpack(await _read_exactly(stream, LENGTH.size))
    if size > MAX_MESSAGE_BYTES:
        raise AssignmentError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    raw = await _read_exactly(stream, size)
    return load_map(raw, max_bytes=MAX_MESSAGE_BYTES, what="assignment message", error=AssignmentError)


async def _write_message(stream: INetStream, message: dict[str, Any]) -> None:
    body = cbor2.dumps(message, canonical=True)
    await stream.write(LENGTH.pack(len(body)) + body)


def _request(message: CborMap) -> tuple[str, str, int]:
    return (
        message.text("model", max_len=256),
        message.text("plan", max_len=256),
        message.integer("stage", max_value=1024),
    )


def assignment_handler(
    serve: Serve, *, allow: Callable[[ID], bool] = _allow_all
) -> Callable[[INetStream], Awaitable[None]]:
    """The stream handler of a node that accepts assignments: ``serve(model, stage, plan, assigner)``
    for the assigners ``allow`` lets (the node's policy, action ``assign``); others are refused."""

    async def handle(stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(10):
                model, plan, stage = _request(await _read_message(stream))
            answer: dict[str, Any]
            if not allow(peer):
                answer = {"ok": False, "error": DENIED}
            else:
                log.info("stage assigned", extra={"peer_id": str(peer), "plan": plan, "stage": stage})
                try:
                    served = await serve(model, stage, plan, peer)
                    answer = {"ok": True, "stage_cid": served["stage_cid"]}
                except AccelNodeError as exc:  # refusals (plan does not verify, model not held, ...)
                    answer = {"ok": False, "error": str(exc)[:1000]}
            await _write_message(stream, answer)
            await stream.close()
        except Exception as exc:  # a broken or malformed request: reset and move on
            log.info("stage assignment failed", extra={"peer_id": str(peer), "error": str(exc)})
            await stream.reset()

    return handle


async def assign(host: IHost, peer: ID, *, model: str, plan: str, stage: int) -> str:
    """Ask ``peer`` to serve ``stage`` of ``plan``; the stage CID it serves."""
    try:
        stream = await host.new_stream(peer, [ASSIGN_PROTOCOL])
    except Exception as exc:
        raise AssignmentError(f"cannot reach {peer} to assign stage {stage}: {exc}") from exc
    try:
        with trio.fail_after(ANSWER_TIMEOUT_S):
            await _write_message(stream, {"model": model, "plan": plan, "stage": stage})
            answer = await _read_message(stream)
        await stream.close()
    except AssignmentError:
        await stream.reset()
        raise
    except Exception as exc:  # timeouts, resets, peers that do not accept assignments
        await stream.reset()
        reason = str(exc) or type(exc).__name__
        raise AssignmentError(f"assigning stage {stage} to {peer} failed: {reason}") from exc
    if answer.get("ok") is not True:
        raise AssignmentError(f"{peer} refused stage {stage}: {answer.get('error', 'no reason given')}")
    return answer.text("stage_cid", max_len=256)
