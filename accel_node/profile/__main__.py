"""Profiling in a worker process: ``python -m accel_node.profile static|run``.

The daemon runs the profiler here rather than in its own process: the measurements allocate
hundreds of MiB (STREAM arrays, GEMM operands) and load numpy BLAS threads and ONNX Runtime,
none of which should stay in the daemon's memory or contend with its event loop for the GIL.

Output is JSON lines on stdout: ``{"progress": [step, index, count]}`` while running, then one
``{"static": ..., "fingerprint": ...}`` or ``{"profile": ...}``; on failure ``{"error": ...}`` and
exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from accel_node.profile import collect_static, fingerprint, run_profile


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accel_node.profile")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("static", help="print the static facts and the hardware fingerprint")
    run = sub.add_parser("run", help="measure this machine")
    run.add_argument("--mode", choices=["quick", "full"], default="quick")
    run.add_argument("--disk-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "static":
            static = collect_static()
            _emit({"static": static.to_dict(), "fingerprint": fingerprint(static)})
        else:
            profile = run_profile(
                args.mode,
                disk_dir=args.disk_dir,
                progress=lambda step, index, count: _emit({"progress": [step, index, count]}),
            )
            _emit({"profile": profile.to_dict()})
    except Exception as exc:  # reported to the daemon, which logs it and keeps running
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
