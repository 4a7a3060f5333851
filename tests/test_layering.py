"""Import hygiene: every module imports, and ``p2p`` never imports ``accel_node``."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import accel_node
import p2p

REPO = Path(__file__).resolve().parent.parent


def modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    name = package.__name__  # type: ignore[attr-defined]
    return [name] + [m.name for m in pkgutil.walk_packages(path, prefix=name + ".")]


def test_p2p_source_never_imports_accel_node() -> None:
    offenders = []
    for file in (REPO / "p2p").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{file.name}: {n}" for n in names if n.split(".")[0] == "accel_node"]
    assert offenders == []


def test_importing_all_of_p2p_loads_no_accel_node_module() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {modules(p2p)!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'accel_node']\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_module_imports() -> None:
    code = (
        "import importlib\n"
        + f"for m in {modules(accel_node) + modules(p2p)!r}: importlib.import_module(m)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr


def test_cli_does_not_import_node_internals() -> None:
    """The CLI client commands start fast: no libp2p, trio, numpy or node import for `status` & co."""
    code = (
        "import sys\nimport accel_node.cli.main, accel_node.client\n"
        "slow = ('libp2p', 'trio', 'numpy', 'onnxruntime', 'accel_node.node', 'accel_node.network')\n"
        "bad = [m for m in slow if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr


def test_shard_wire_does_not_load_onnx() -> None:
    """The data plane bounds its messages with ``shard.limits``; it must not pull in the partitioner."""
    code = (
        "import sys\n"
        "import accel_node.shard.wire\n"
        "bad = [m for m in ('onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr


def _contract() -> list[set[str]]:
    """The layer list of docs/ARCHITECTURE.md, top to bottom."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("```layer-contract\n", 1)[1].split("```", 1)[0]
    return [{name.strip() for name in line.split("|")} for line in block.splitlines() if line.strip()]


def _unit(module: str, units: set[str]) -> str | None:
    """The contract entry a dotted module name belongs to (the longest prefix listed)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in units:
            return ".".join(parts[:end])
    return None


def _violations(module: str, source_text: str, layers: list[set[str]]) -> list[str]:
    """Imports in ``source_text`` (of ``module``) that break the contract."""
    level = {unit: i for i, layer in enumerate(layers) for unit in layer}
    source = _unit(module, set(level))
    assert source is not None, module
    found = []
    for node in ast.walk(ast.parse(source_text)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            target = _unit(name, set(level))
            if target is not None and target != source and level[target] <= level[source]:
                found.append(f"{module} imports {name} ({target} is not below {source})")
    return found


def test_imports_follow_the_layer_contract_of_architecture_md() -> None:
    layers = _contract()
    units = set().union(*layers)
    unplaced, violations = [], []
    for file in sorted([*(REPO / "accel_node").rglob("*.py"), *(REPO / "p2p").rglob("*.py")]):
        module = ".".join(file.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if _unit(module, units) == "accel_node" and module != "accel_node":
            unplaced.append(module)  # a package of accel_node missing from the contract
            continue
        violations += _violations(module, file.read_text(), layers)
    assert unplaced == [], "place these in docs/ARCHITECTURE.md's layer-contract"
    assert violations == []


def test_the_layer_contract_refuses_upward_and_sideways_imports() -> None:
    layers = _contract()
    assert _violations("accel_node.store.db", "from accel_node.api.app import create_app", layers)
    assert _violations("accel_node.runtime.x", "def f():\n    import accel_node.presence", layers)
    assert _violations("p2p.host", "import accel_node.errors", layers)
    assert not _violations("accel_node.api.app", "from accel_node.store import AsyncStore", layers)
    assert not _violations("accel_node.api.app", "from accel_node.api.errors import error_body", layers)
