"""No control-API path is spelled out outside the endpoint table and the API: the client, the CLI,
the tests and the benchmarks build every request from :mod:`accel_node.core.endpoints`, so a path
changes in one place (issue 10: "no ``/v1/`` literals outside the API and the client").

The scan reads string constants with :mod:`ast`: prose (docstrings, any string that is a statement
of its own, comments) may name endpoints; code may not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.daemons import REPO_ROOT

PREFIX = "/v1/"
SCANNED = ("accel_node", "p2p", "scripts", "tests")
EXEMPT = (
    REPO_ROOT / "accel_node" / "core" / "endpoints.py",  # the table itself
    REPO_ROOT / "accel_node" / "api",  # the server, registered from the table
    Path(__file__).resolve(),  # this scan: its literals are examples
)
ALLOWED = {
    # Paths that are no endpoint, on purpose: what the API answers to a request for none.
    ("tests/api/test_properties.py", "/v1/nope"),
}


def sources() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            if not any(path == e or e in path.parents for e in EXEMPT):
                yield path


def path_literals(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, text) of each string constant in code that starts with ``/v1/`` (docstrings and other
    strings standing alone as statements are prose, and skipped)."""
    tree = ast.parse(source, filename)
    prose = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in prose:
            value = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if isinstance(value, str) and value.startswith(PREFIX):
                found.append((node.lineno, value))
    return found


def test_no_api_path_literals_outside_the_endpoint_table_and_the_api() -> None:
    offenders = []
    for path in sources():
        name = path.relative_to(REPO_ROOT).as_posix()
        for line, text in path_literals(path.read_text(), name):
            if (name, text) not in ALLOWED:
                offenders.append(f"{name}:{line}: {text!r}")
    assert offenders == [], "build these from accel_node.core.endpoints:\n" + "\n".join(offenders)


def test_the_scan_sees_code_and_skips_prose() -> None:
    source = '''"""GET /v1/status, in a docstring."""
def f(cid):
    """POST /v1/infer/{cid}."""
    "/v1/prose"  # a string statement: prose too
    return ["/v1/status", f"/v1/infer/{cid}", b"/v1/raw", "GET /v1/status p50"]
'''
    assert sorted(path_literals(source, "example.py")) == [
        (5, "/v1/infer/"),
        (5, "/v1/raw"),
        (5, "/v1/status"),
    ]
