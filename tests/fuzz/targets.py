"""Every fuzz target, by name: importing this module registers them all in :data:`TARGETS`."""

from __future__ import annotations

from tests.fuzz import targets_bulk, targets_codec, targets_records, targets_shard, targets_tensors
from tests.fuzz.harness import TARGETS, Target

MODULES = (targets_codec, targets_bulk, targets_records, targets_shard, targets_tensors)

__all__ = ["MODULES", "TARGETS", "Target"]
