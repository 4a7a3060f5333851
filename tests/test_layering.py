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
    """The CLI client commands start fast: no libp2p, trio or node import for `status` & co."""
    code = (
        "import sys\nimport accel_node.cli.main, accel_node.client\n"
        "bad = [m for m in ('libp2p', 'accel_node.node', 'accel_node.network') if m in sys.modules]\n"
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
