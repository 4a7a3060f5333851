"""Every fuzz target under hypothesis, at a CI budget: random bytes, then mutated valid encodings.

A target raises only when its decoder let through an error it does not document (see
:mod:`tests.fuzz.harness`); a crash found here (or by ``scripts/fuzz.py``) becomes a case in
``test_regressions.py``. Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel_node.shard.wire import MAGIC, PREFIX
from tests.fuzz.mutations import cbor_variants, mutated
from tests.fuzz.targets import TARGETS

HANG_S = 5.0
"""One input taking this long counts as a hang (generous: the CI machine may be busy)."""


def ci(max_examples: int) -> settings:
    """Deterministic settings: derandomized, no example database, no deadline (hangs: HANG_S)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


NAMES = sorted(TARGETS)


def _run(name: str, data: bytes) -> None:
    started = time.monotonic()
    TARGETS[name].fuzz_one(data)
    elapsed = time.monotonic() - started
    assert elapsed < HANG_S, f"{name} took {elapsed:.1f} s on {len(data)} bytes"


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_accepted(name: str) -> None:
    """The seeds are valid encodings; the target must run each without a crash."""
    seeds = TARGETS[name].seeds()
    assert seeds
    for seed in seeds:
        assert len(seed) <= TARGETS[name].max_len
        _run(name, seed)


@pytest.mark.parametrize("name", NAMES)
@ci(30)
@given(data=st.data())
def test_random_bytes(name: str, data: st.DataObject) -> None:
    _run(name, data.draw(st.binary(max_size=min(512, TARGETS[name].max_len)), label="input"))


@pytest.mark.parametrize("name", NAMES)
@ci(60)
@given(data=st.data())
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    _run(name, data.draw(mutated(target.seeds(), target.max_len), label="input"))


# -- CBOR-aware mutations: every item of every CBOR seed replaced by hostile values ----------------------

Split = Callable[[bytes], tuple[bytes, Callable[[bytes], bytes]]]


def _whole(seed: bytes) -> tuple[bytes, Callable[[bytes], bytes]]:
    return seed, lambda cbor: cbor


def _after(size: int, pack: Callable[[int], bytes]) -> Split:
    """The CBOR after a ``size``-byte length prefix (rebuilt by ``pack`` for the new length)."""
    return lambda seed: (seed[size:], lambda cbor: pack(len(cbor)) + cbor)


def _shard_header(seed: bytes) -> tuple[bytes, Callable[[bytes], bytes]]:
    _, header_len, body_len = PREFIX.unpack_from(seed)
    body = seed[PREFIX.size + header_len :]
    return seed[
        PREFIX.size : PREFIX.size + header_len
    ], lambda cbor: PREFIX.pack(MAGIC, len(cbor), body_len) + cbor + body


def _dht(seed: bytes) -> tuple[bytes, Callable[[bytes], bytes]]:
    key, _, value = seed.partition(b"\x00")
    return value, lambda cbor: key + b"\x00" + cbor


CBOR_TARGETS: dict[str, Split] = {
    "cbor": _whole,
    "record": _whole,
    "capability_record": _whole,
    "capability_body": _whole,
    "presence_record": _whole,
    "presence_body": _whole,
    "plan": _whole,
    "plan_map": _whole,
    "manifest": _whole,
    "manifest_map": _whole,
    "dht_value": _dht,
    "shard_message": _shard_header,
    "bulk_control": _after(2, lambda n: struct.pack(">H", n)),
    "assign_message": _after(4, lambda n: struct.pack(">I", n)),
}


@pytest.mark.parametrize("name", sorted(CBOR_TARGETS))
def test_hostile_cbor_items(name: str) -> None:
    """Each field of each seed in turn holds a huge integer, NaN, a wrong type, a deep or self-containing
    structure, an unknown tag; the decoder must refuse with its own error (or accept), never crash."""
    for seed in TARGETS[name].seeds():
        cbor, rebuild = CBOR_TARGETS[name](seed)
        for variant in cbor_variants(cbor, limit=300):
            _run(name, rebuild(variant))


def test_atheris_smoke(tmp_path: Path) -> None:
    """scripts/fuzz.py runs a target under atheris (coverage-guided) and reports what it executed."""
    pytest.importorskip("atheris")
    script = Path(__file__).resolve().parents[2] / "scripts" / "fuzz.py"
    command = [sys.executable, str(script), "--target", "varint", "--runs", "300", "--crashes", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "total" in done.stdout and " 300 inputs" in done.stdout, done.stdout
    assert not any(tmp_path.rglob("crash-*"))
