"""What a stage server keeps of the requests it computed, so that requesters can audit it afterwards.

For every RUN it computes, the stage server signs a receipt (:mod:`accel_node.shard.receipts`) over the
input it received and the output it sends on, and keeps both here for a while. A requester that decides,
after its answer was delivered, to audit the stage sends ``AUDIT`` (request id, stage, model) on
``shard/1``; :meth:`Retention.answer` gives it ``RETAINED`` with the receipt and the tensors, or FAIL. A
stage that cannot produce what it committed to is penalised by the requester (it cannot prove it was
honest); one whose retained tensors differ from its receipt has, in effect, lied.

Bounded (``[shard] retention_bytes``, ``retention_s`` and an entry count): the oldest entries go first
when a bound is reached, and entries expire after ``keep_s``. Each requester may hold at most a share
of the bytes (``max_bytes_per_requester``, a quarter by default): its own oldest entries go first, so a
requester flooding a stage evicts its own entries, not the ones other requesters may still audit (an
honest stage that cannot produce committed data is penalised by whoever audits it). Only the
requester (the RUN's reply-to peer) may read an entry: activations are the requester's data.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from accel_node.shard.receipts import as_received, sign_receipt, tensor_digest
from accel_node.shard.wire import UNKNOWN_STAGE, Kind, Message, reject

Arrays = dict[str, np.ndarray[Any, Any]]

IN, OUT = "in/", "out/"
DEFAULT_BYTES = 64 << 20
DEFAULT_KEEP_S = 60.0
DEFAULT_ENTRIES = 4096


@dataclass(frozen=True)
class Retained:
    """One computed micro-batch: what the stage received and what it sent on, and its receipt."""

    model: str
    stage: int
    micro_batch: int
    fp16: bool
    requester: ID
    inputs: Arrays
    outputs: Arrays
    receipt: bytes
    expires: float
    nbytes: int


def packed(inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
    """Inputs and outputs as one tensor map (``in/<name>``, ``out/<name>``), as RETAINED carries them."""
    return {**{IN + n: a for n, a in inputs.items()}, **{OUT + n: a for n, a in outputs.items()}}


def unpacked(tensors: Mapping[str, np.ndarray[Any, Any]]) -> tuple[Arrays, Arrays] | None:
    """The inputs and outputs of a RETAINED tensor map; None when a name has neither prefix."""
    inputs = {n[len(IN) :]: a for n, a in tensors.items() if n.startswith(IN)}
    outputs = {n[len(OUT) :]: a for n, a in tensors.items() if n.startswith(OUT)}
    return (inputs, outputs) if len(inputs) + len(outputs) == len(tensors) else None


class Retention:
    """Signs receipts and keeps recent inputs and outputs; see the module docstring."""

    def __init__(
        self,
        key_pair: KeyPair,
        *,
        max_bytes: int = DEFAULT_BYTES,
        keep_s: float = DEFAULT_KEEP_S,
        max_entries: int = DEFAULT_ENTRIES,
        max_bytes_per_requester: int | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if max_bytes < 0 or keep_s < 0 or max_entries < 0:
            raise ValueError("retention bounds must be >= 0")
        self.key_pair = key_pair
        self.max_bytes = max_bytes
        self.max_bytes_per_requester = (
            max_bytes // 4 if max_bytes_per_requester is None else max_bytes_per_requester
        )
        self._requester_bytes: dict[ID, int] = {}
        self.keep_s = keep_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[tuple[bytes, int], Retained] = OrderedDict()
        self.bytes = 0
        self.audits = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def commit(self, message: Message, output: Mapping[str, np.ndarray[Any, Any]]) -> Message:
        """Sign the receipt of computing ``message`` (a RUN) into ``output``, keep both, and return the
        message with its receipts extended by this stage's (what goes on with the output)."""
        sent = as_received(output, message.fp16)
        inputs = dict(message.tensors)
        receipt = sign_receipt(
            self.key_pair,
            request_id=message.request_id,
            model=message.model,
            stage=message.stage,
            micro_batch=message.micro_batch,
            fp16=message.fp16,
            input_digest=tensor_digest(inputs),
            output_digest=tensor_digest(sent),
        )
        assert message.reply_to is not None
        nbytes = sum(a.nbytes for a in inputs.values()) + sum(a.nbytes for a in sent.values())
        self._store(
            (message.request_id, message.stage),
            Retained(message.model, message.stage, message.micro_batch, message.fp16, message.reply_to,
                     inputs, sent, receipt.raw, self.clock() + self.keep_s, nbytes),
        )  # fmt: skip
        return replace(message, receipts=(*message.receipts, receipt.raw))

    def _store(self, key: tuple[bytes, int], entry: Retained) -> None:
        self._expire()
        old = self._entries.pop(key, None)
        if old is not None:
            self._forget(old)
        if entry.nbytes > min(self.max_bytes, self.max_bytes_per_requester) or self.max_entries == 0:
            return
        share = self.max_bytes_per_requester
        if self._requester_bytes.get(entry.requester, 0) + entry.nbytes > share:
            for older_key in [k for k, e in self._entries.items() if e.requester == entry.requester]:
                self._forget(self._entries.pop(older_key))  # this requester's oldest first
                if self._requester_bytes.get(entry.requester, 0) + entry.nbytes <= share:
                    break
        while self._entries and (
            self.bytes + entry.nbytes > self.max_bytes or len(self._entries) >= self.max_entries
        ):
            _, dropped = self._entries.popitem(last=False)
            self._forget(dropped)
        self._entries[key] = entry
        self.bytes += entry.nbytes
        self._requester_bytes[entry.requester] = self._requester_bytes.get(entry.requester, 0) + entry.nbytes

    def _forget(self, entry: Retained) -> None:
        self.bytes -= entry.nbytes
        left = self._requester_bytes.get(entry.requester, 0) - entry.nbytes
        if left > 0:
            self._requester_bytes[entry.requester] = left
        else:
            self._requester_bytes.pop(entry.requester, None)

    def _expire(self) -> None:
        now = self.clock()
        while self._entries:
            key, first = next(iter(self._entries.items()))
            if first.expires > now:
                break
            del self._entries[key]
            self._forget(first)

    def lookup(self, request_id: bytes, stage: int) -> Retained | None:
        self._expire()
        return self._entries.get((request_id, stage))

    def answer(self, message: Message, peer: ID) -> Message:
        """The answer to an AUDIT from ``peer``: RETAINED, or FAIL ``unknown-stage`` when nothing is kept
        for it (expired, evicted, never computed here, or ``peer`` is not the request's requester)."""
        entry = self.lookup(message.request_id, message.stage)
        if entry is None or entry.model != message.model or entry.requester != peer:
            self.refused += 1
            return reject(message, UNKNOWN_STAGE, "nothing retained for this request and stage")
        self.audits += 1
        return Message(
            Kind.RETAINED,
            message.request_id,
            stage=entry.stage,
            tag=message.tag,
            model=entry.model,
            micro_batch=entry.micro_batch,
            fp16=False,  # the retained tensors exactly, already rounded where they travelled as float16
            tensors=packed(entry.inputs, entry.outputs),
            receipts=(entry.receipt,),
        )
