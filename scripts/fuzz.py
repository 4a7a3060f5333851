"""Coverage-guided fuzzing of every network decoder with atheris (libFuzzer for Python): the long run.

    python scripts/fuzz.py [--target NAME ...|all] [--runs N | --seconds S] [--crashes DIR] [--corpus DIR]

Each target (see ``tests/fuzz/targets.py``; ``--list`` names them) runs in a subprocess of its own, with
only ``accel_node`` and ``p2p`` instrumented for coverage, starting from a corpus seeded with valid
encodings made by the project's encoders. ``--runs`` and ``--seconds`` are per target. A crash (an
exception the decoder does not document), a timeout (``--timeout`` per input) or running over the memory
limit (``--rss-limit-mb``) is saved under ``--crashes/<target>/``; the target is then restarted for the
rest of its budget (at most ``--max-crashes`` times). The report gives inputs executed per target and in
total and every crash input; the exit status is 1 when anything crashed.

A saved crash input reproduces with ``python scripts/fuzz.py --worker NAME MODULE <crash file>``
(MODULE: the ``tests.fuzz.targets_*`` module that defines the target); make it a test in
``tests/fuzz/test_regressions.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_ARTIFACT = re.compile(r"(?:Test unit written to|artifact_prefix.*?; Test unit written to) (\S+)")


def _worker(name: str, module: str, libfuzzer_args: list[str]) -> None:
    """Run one target (defined in ``module``) under atheris in this process; libFuzzer exits when done."""
    import importlib

    import atheris

    sys.path.insert(0, str(REPO))
    # Third-party code is imported uninstrumented first; only the project's own decoders are traced.
    import cbor2  # noqa: F401
    import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    import libp2p.peer.id  # noqa: F401
    import multiaddr  # noqa: F401
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import pydantic  # noqa: F401

    with atheris.instrument_imports(include=["accel_node", "p2p"]):
        importlib.import_module(module)
    from tests.fuzz.harness import TARGETS

    fuzz_one = TARGETS[name].fuzz_one
    atheris.Setup([sys.argv[0], *libfuzzer_args], fuzz_one)
    atheris.Fuzz()


@dataclass
class Outcome:
    name: str
    runs: int = 0
    seconds: float = 0.0
    crashes: list[Path] = field(default_factory=list)


def _run_target(name: str, args: argparse.Namespace, corpus_root: Path) -> Outcome:
    from tests.fuzz.targets import TARGETS

    target = TARGETS[name]
    corpus = corpus_root / name
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(target.seeds()):
        (corpus / f"seed-{index}").write_bytes(seed)
    crash_dir = Path(args.crashes).resolve() / name
    crash_dir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(name)
    started = time.monotonic()
    runs_left = args.runs
    while True:
        budget = (
            [f"-runs={runs_left}"]
            if args.runs is not None
            else [f"-max_total_time={max(1, round(args.seconds - (time.monotonic() - started)))}"]
        )
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            name,
            target.fuzz_one.__module__,
            *budget,
            f"-max_len={target.max_len}",
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_limit_mb}",
            f"-artifact_prefix={crash_dir}/",
            "-print_final_stats=1",
            str(corpus),
        ]
        child = subprocess.run(
            command, capture_output=True, text=True, errors="replace", cwd=REPO, check=False
        )
        log = child.stderr + child.stdout
        done = _DONE.search(log)
        progress = [int(n) for n in _PROGRESS.findall(log)]
        runs = int(done.group(1)) if done else max(progress, default=0)
        outcome.runs += runs
        if child.returncode == 0 and done:
            break
        artifacts = [Path(p) for p in _ARTIFACT.findall(log)]
        outcome.crashes.extend(artifacts)
        if not artifacts:  # died without saying why: keep its log
            (crash_dir / f"log-{len(outcome.crashes)}.txt").write_text(log)
            outcome.crashes.append(crash_dir / f"log-{len(outcome.crashes)}.txt")
        print(
            f"  {name}: crash after {runs} inputs: {[str(a) for a in artifacts]}\n{log[-3000:]}", flush=True
        )
        if args.runs is not None:
            runs_left -= runs
            if runs_left <= 0:
                break
        elif time.monotonic() - started >= args.seconds:
            break
        if len(outcome.crashes) >= args.max_crashes:
            break
    outcome.seconds = time.monotonic() - started
    return outcome


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4:])
        return 0
    sys.path.insert(0, str(REPO))
    from tests.fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", default=None, help="a target name, or all (default)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=int, help="inputs per target")
    budget.add_argument("--seconds", type=float, help="seconds per target (default 10)")
    parser.add_argument("--crashes", default=str(REPO / "fuzz-crashes"), help="where crash inputs are saved")
    parser.add_argument("--corpus", help="keep the corpora here (default: a temporary directory)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--max-crashes", type=int, default=5, help="restarts of one target after crashes")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once (one process each)")
    parser.add_argument("--list", action="store_true", help="name the targets and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(TARGETS))
        return 0
    if args.runs is None and args.seconds is None:
        args.seconds = 10.0
    names = list(TARGETS) if not args.target or "all" in args.target else args.target
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; --list names them")

    def one(name: str) -> Outcome:
        outcome = _run_target(name, args, corpus_root)
        rate = outcome.runs / outcome.seconds if outcome.seconds else 0.0
        print(
            f"{name:22} {outcome.runs:>10} inputs {outcome.seconds:7.1f} s {rate:9.0f}/s "
            f"crashes {len(outcome.crashes)}",
            flush=True,
        )
        return outcome

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="accel-fuzz-") as tmp:
        corpus_root = Path(args.corpus).resolve() if args.corpus else Path(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(one, names))
    wall = time.monotonic() - started
    total = sum(o.runs for o in outcomes)
    crashes = [c for o in outcomes for c in o.crashes]
    print(
        f"{'total':22} {total:>10} inputs {wall:7.1f} s (wall, {args.jobs} at once) over "
        f"{len(outcomes)} targets, crashes {len(crashes)}"
    )
    for path in crashes:
        print(f"  crash input: {path}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
