"""Generate the synchronous HTTP client (accel_node/client/_sync.py) from the asynchronous one.

httpcore keeps its sync code generated from the async source the same way (its unasync script), so
that the two cannot drift apart; ``tests/client/test_client.py`` fails when the generated file is stale.
Usage: ``python scripts/unasync_client.py`` (``--check`` only compares).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "accel_node" / "client" / "_async.py"
TARGET = ROOT / "accel_node" / "client" / "_sync.py"

SUBS = [
    (r"\basync def ", "def "),
    (r"\basync with ", "with "),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\bAsyncBaseTransport\b", "BaseTransport"),
    (r"\bAsync(\w*)", r"\1"),
]
HEADER = '''"""The synchronous HTTP client of the control API.

GENERATED from ``_async.py`` by ``scripts/unasync_client.py``: do not edit.
"""
'''


def generate(text: str) -> str:
    """The sync module for the async source ``text`` (its docstring replaced by HEADER)."""
    body = text.split('"""', 2)[2].lstrip("\n")
    for pattern, replacement in SUBS:
        body = re.sub(pattern, replacement, body)
    return _formatted(HEADER + "\n" + body)


def _formatted(source: str) -> str:
    """``source`` as ``ruff format`` writes it (removing ``await`` can let lines join)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    done = subprocess.run(
        [ruff, "format", "--stdin-filename", str(TARGET), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return done.stdout


def main() -> int:
    generated = generate(SOURCE.read_text())
    if "--check" in sys.argv:
        if TARGET.read_text() != generated:
            print(f"{TARGET} is stale: run python scripts/unasync_client.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
