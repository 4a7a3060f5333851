"""Every benchmark module in ``scripts/bench`` imports (nothing runs: a cheap check), so that a
refactor elsewhere cannot silently break the benchmarks, which CI never runs."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import scripts.bench

MODULES = sorted(m.name for m in pkgutil.iter_modules(scripts.bench.__path__, "scripts.bench."))


def test_every_benchmark_is_found() -> None:
    names = {m.rsplit(".", 1)[1] for m in MODULES}
    assert {"harness", "cpu", "stats", "report"} <= names
    assert {"content", "dht", "node", "profile", "serving", "shard", "export_minilm"} <= names


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    if name.rsplit(".", 1)[1] in ("content", "dht", "node", "profile", "serving", "shard"):
        assert callable(module.main)
