"""Every fuzz target under hypothesis, at a CI budget: random bytes, then mutated valid encodings.

A target raises only when its decoder let through an error it does not document (see
:mod:`tests.fuzz.harness`); a crash found here (or by ``scripts/fuzz.py``) becomes a case in
``test_regressions.py``. Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.mutations import mutated
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
@ci(40)
@given(data=st.data())
def test_random_bytes(name: str, data: st.DataObject) -> None:
    _run(name, data.draw(st.binary(max_size=min(512, TARGETS[name].max_len)), label="input"))


@pytest.mark.parametrize("name", NAMES)
@ci(100)
@given(data=st.data())
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    _run(name, data.draw(mutated(target.seeds(), target.max_len), label="input"))
