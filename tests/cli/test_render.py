"""What the CLI shows people: figures with units, one line for a missing GPU, 80-column tables.

The render functions get data shaped as the daemon's API returns it (built with the daemon's own
types where they exist) and print to an 80-column rich console, as in a small terminal.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest

from accel_node.cli import render
from accel_node.cli.units import (
    fmt_age,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_gb,
    fmt_ms,
    fmt_number,
    fmt_percent,
    fmt_rate,
)
from accel_node.profile.model import Measurement

PEER_A = "12D3KooWGzKHRqkvJ7xmqhdnA5DDTkVz2PsCeZVL6x8ZSE4Mcy8j"
PEER_B = "12D3KooWRBhwfeP2Y9CDkFqmgnyDWhWJXfD3wLmhTJ3Xs8hRjQ2m"
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
KEY_ID = "3f9c2a7b1e6d4c8a9b0e1f2a3b4c5d6e"


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    monkeypatch.setattr(render, "console", render.make_console(file=buffer, width=80, color_system=None))
    yield buffer


def lines_of(buffer: io.StringIO) -> list[str]:
    text = buffer.getvalue()
    lines = text.splitlines()
    assert lines, "nothing was printed"
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, f"lines wider than 80 columns: {too_wide}"
    return lines


def first_column(text: str) -> str:
    """The first cell of every line, joined: a folded identifier reads whole again."""
    return "".join(line.split()[0] for line in text.splitlines() if line.strip())


def test_figures_have_units_and_sensible_precision() -> None:
    assert fmt_rate(134.62658473049643, "GFLOP/s") == "134.6 GFLOP/s"
    assert fmt_rate(None, "GB/s") == "-"
    assert [fmt_number(v) for v in (0.0, 3.0, 12.3456, 0.012345, 12345.6)] == [
        "0",
        "3",
        "12.35",
        "0.01235",
        "12,346",
    ]
    assert [fmt_bytes(n) for n in (512, 1536, 5 * 2**20, 80 * 2**30)] == [
        "512 B",
        "1.5 KiB",
        "5.0 MiB",
        "80.0 GiB",
    ]
    assert fmt_gb(67.4) == "62.8 GiB"  # hardware summaries count GB of 1e9 bytes
    assert [fmt_duration(s) for s in (12e-6, 0.01234, 3.333, 125, 7300)] == [
        "12 µs",
        "12.3 ms",
        "3.33 s",
        "2 min 5 s",
        "2 h 1 min",
    ]
    assert fmt_ms(0.351) == "351 µs" and fmt_ms(None) == "-"
    assert fmt_count(2.5e9, "FLOP") == "2.5 GFLOP" and fmt_count(1_234_567) == "1.235 M"
    assert (fmt_percent(0.25), fmt_percent(0.034)) == ("25%", "3.4%")
    assert fmt_age(100.0, now=112.5) == "12.5 s ago"


def cpu_measurements() -> list[dict[str, object]]:
    def m(name: str, unit: str, threads: int, samples: list[float]) -> dict[str, object]:
        return Measurement.from_samples(name, unit, f"{name} method, long text", threads, samples).to_dict()

    return [
        m("numpy_gemm_fp32_1", "GFLOP/s", 1, [67.31329236524821, 68.0, 66.9]),
        m("numpy_gemm_fp32_all", "GFLOP/s", 2, [134.62658473049643, 133.1, 135.2]),
        m("ort_gemm_int8_all", "GOP/s", 2, [201.44, 199.9, 203.0]),
        m("mem_triad_all", "GB/s", 2, [17.1234, 17.4, 16.9]),
        Measurement.unavailable("cpu_power", "W", "RAPL package energy", 0, "no RAPL counters").to_dict(),
    ]


NO_GPU_REASON = "torch is installed but sees no CUDA device"


def hardware_data(gpus: list[dict[str, object]]) -> dict[str, object]:
    measurements = cpu_measurements()
    if gpus:
        measurements.append(
            Measurement.from_samples(
                "gpu0_matmul_fp16", "TFLOP/s", "torch.matmul", 0, [612.3, 615.0]
            ).to_dict()
        )
    else:
        measurements += [
            Measurement.unavailable(name, unit, "torch CUDA measurement", 0, NO_GPU_REASON).to_dict()
            for name, unit in (
                ("gpu_d2d_copy", "GB/s"),
                ("gpu_matmul_fp32", "TFLOP/s"),
                ("gpu_matmul_fp16", "TFLOP/s"),
                ("gpu_matmul_bf16", "TFLOP/s"),
                ("gpu_power", "W"),
            )
        ]
    summary = {
        "peak_gflops": 134.62658473049643,
        "mem_bw_gbs": 17.123456789,
        "mem_total_gb": 67.41234567,
        "mem_free_gb": 41.0987654,
        "cpu": "AMD EPYC 7B13 64-Core Processor",
        "cores": 2,
        "gpus": gpus,
        "profiled": True,
    }
    profile = {"mode": "quick", "duration_s": 41.73321, "measurements": measurements}
    return {"fingerprint": "9f" * 32, "summary": summary, "profile": profile}


def test_hardware_without_a_gpu_says_so_in_one_line(out: io.StringIO) -> None:
    render.hardware(hardware_data(gpus=[]))
    lines = lines_of(out)
    text = "\n".join(lines)
    assert sum("GPU" in line or "gpu" in line for line in lines) == 1
    assert "GPU: none" in lines
    assert "134.6 GFLOP/s" in text and "134.62658" not in text
    assert "17.12 GB/s" in text and "201.4 GOP/s" in text
    assert "38.3 GiB free of 62.8 GiB" in text
    assert "quick profile, 41.7 s" in text
    assert "n/a cpu_power: no RAPL counters" in text
    assert "method, long text" not in text  # methods stay in --json


def test_hardware_with_a_gpu_shows_its_figures(out: io.StringIO) -> None:
    gpu = {"name": "NVIDIA H200", "memory_gb": 150.1, "fp32_tflops": 51.23, "fp16_tflops": 612.3}
    render.hardware(hardware_data(gpus=[gpu]))
    text = "\n".join(lines_of(out))
    assert "GPU: NVIDIA H200: 139.8 GiB, 51.23 TFLOP/s fp32, 612.3 TFLOP/s fp16" in text.splitlines()
    assert "gpu0_matmul_fp16" in text and "GPU: none" not in text


def peer(peer_id: str, *, gpus: list[dict[str, object]]) -> dict[str, object]:
    now = time.time()
    return {
        "peer_id": peer_id,
        "addrs": ["/ip4/192.168.10.23/tcp/4001", "/ip6/fd00:1234:5678::23/tcp/4001"],
        "connected": True,
        "latency_ms": 0.35129876,
        "measured_at": now - 3,
        "capability": {
            "name": "lab-box-3",
            "version": "0.1.0",
            "hw": hardware_data(gpus)["summary"],
            "load": {"queue_depth": 2, "utilisation": 0.4567},
        },
        "capability_seq": 17,
        "capability_verified_at": now - 12.4,
        "perf": {"rtt_ms": 0.41, "upload_mbps": 1123.456, "download_mbps": 987.6543},
    }


def test_peer_tables_fit_80_columns(out: io.StringIO) -> None:
    h200 = {"name": "NVIDIA H200", "memory_gb": 150.1, "fp16_tflops": 612.3}
    peers = [peer(PEER_A, gpus=[]), peer(PEER_B, gpus=[h200])]
    render.peers_table(peers)
    render.capability_table(peers)
    text = "\n".join(lines_of(out))
    assert "351 µs" in text and "134.6" in text and "38.3 GiB" in text and "46%" in text
    assert "mem GB/s" in text and "17.12" in text and "none" in text and "NVIDIA H200" in text
    assert "/ip4/192.168.10.23/tcp/4001" in text and "/ip6/fd00:1234:5678::23" in text  # no emoji codes
    assert first_column(text).count(PEER_A) == 2  # folded inside its column, never cut


def test_peer_detail(out: io.StringIO) -> None:
    render.peer_detail(peer(PEER_A, gpus=[]))
    text = "\n".join(lines_of(out))
    assert "GPU: none" in text.splitlines() and "134.6 GFLOP/s" in text and "46% busy, 2 queued" in text
    assert "up 1,123 MB/s" in text and "12.4 s ago" in text


def test_models_keys_bench_and_plans_fit_80_columns(out: io.StringIO) -> None:
    render.models_table(
        [
            {
                "cid": CID,
                "name": "resnet18-int8",
                "version": 3,
                "size": 11_689_512,
                "publisher": KEY_ID,
                "pinned": True,
            }
        ]
    )
    render.keys_table(
        [{"name": "alice", "key_id": KEY_ID, "public_key": "ed25519:" + "A" * 43 + "=", "own": True}],
        title="own publisher keys",
    )
    render.bench_table(
        [
            {
                "variant": "int8",
                "batch": 8,
                "threads": 2,
                "latency_ms_p50": 12.345678,
                "latency_ms_p90": 15.0001,
                "throughput_items_s": 648.0123,
                "peak_rss_bytes": 412 * 2**20,
            }
        ]
    )
    render.shard_plan(
        {
            "plan": CID,
            "model": CID,
            "stages": [
                {"index": 0, "cid": CID, "flops": 1.8123e9, "param_bytes": 23_456_789, "peers": [PEER_A]},
                {"index": 1, "cid": CID, "flops": 2.5e6, "param_bytes": 512, "peers": []},
            ],
            "placement": [PEER_A, PEER_B],
        }
    )
    text = "\n".join(lines_of(out))
    for figure in ("11.1 MiB", "12.3 ms", "15 ms", "648", "412.0 MiB", "1.812 GFLOP", "22.4 MiB", "512 B"):
        assert figure in text, figure
    assert first_column(text).count(KEY_ID) == 0 and text.count("resnet18-int8") == 1
