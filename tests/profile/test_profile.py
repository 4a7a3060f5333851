"""The hardware self-profiler: one real quick profile per module, plus unit tests of its parts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from accel_node.profile import (
    STEP_NAMES,
    HardwareProfile,
    Measurement,
    StaticFacts,
    collect_static,
    disk,
    fingerprint,
    gpu,
    memory,
    ort_gemm,
    power,
    run_profile,
    stats,
)
from accel_node.profile.model import CacheInfo, GpuInfo
from accel_node.profile.static import collect_caches, isa_flags

# Figures every machine must produce; the rest depend on hardware that may be absent.
REQUIRED = {
    "numpy_gemm_fp32_1t",
    "numpy_gemm_fp32_all",
    "ort_gemm_fp32_1t",
    "ort_gemm_fp32_all",
    "ort_gemm_int8_1t",
    "ort_gemm_int8_all",
    "mem_copy_1t",
    "mem_copy_all",
    "mem_triad_1t",
    "mem_triad_all",
    "disk_read",
}
OPTIONAL_PREFIXES = ("gpu", "cpu_package_power")


@pytest.fixture(scope="module")
def profiled(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[HardwareProfile, list[tuple[str, int, int]], Path]:
    """One real quick profile for the whole module (it takes ~10 s), with its progress calls."""
    calls: list[tuple[str, int, int]] = []
    disk_dir = tmp_path_factory.mktemp("home")
    profile = run_profile("quick", disk_dir=disk_dir, progress=lambda *args: calls.append(args))
    return profile, calls, disk_dir


@pytest.fixture(scope="module")
def profile(profiled: tuple[HardwareProfile, list[tuple[str, int, int]], Path]) -> HardwareProfile:
    return profiled[0]


# --- the quick profile --------------------------------------------------------------------------


def test_every_required_figure_is_measured_positive_finite_with_cv(profile: HardwareProfile) -> None:
    by_name = {m.name: m for m in profile.measurements}
    assert by_name.keys() >= REQUIRED
    for name in REQUIRED:
        m = by_name[name]
        assert m.available, f"{name}: {m.unavailable_reason}"
        assert m.median is not None and math.isfinite(m.median) and m.median > 0, name
        assert m.cv is not None and math.isfinite(m.cv) and m.cv >= 0, name
        assert m.repeats == len(m.samples) >= 5, name
        assert all(math.isfinite(s) and s > 0 for s in m.samples), name
        assert m.median == stats.median(m.samples)
        assert m.threads >= 1 and m.unit and m.method
        assert m.background_load is None or 0.0 <= m.background_load <= 1.0


def test_optional_figures_are_measured_or_say_why_not(profile: HardwareProfile) -> None:
    others = [m for m in profile.measurements if m.name not in REQUIRED]
    assert {m.name for m in others} >= {"cpu_package_power"}
    assert any(m.name.startswith("gpu") for m in others)
    for m in others:
        assert m.name.startswith(OPTIONAL_PREFIXES), m.name
        if m.available:
            assert m.median is not None and m.median > 0 and m.cv is not None
        else:
            assert m.unavailable_reason and m.median is None and m.cv is None and m.samples == ()


def test_all_threads_use_every_usable_cpu(profile: HardwareProfile) -> None:
    for name in ("numpy_gemm_fp32_all", "ort_gemm_fp32_all", "mem_triad_all"):
        m = profile.measurement(name)
        assert m is not None and m.threads == profile.static.usable_cpus
    single = profile.measurement("numpy_gemm_fp32_1t")
    assert single is not None and single.threads == 1 and "BLAS reports 1 threads" in single.method


def test_methods_state_sizes_and_byte_counting(profile: HardwareProfile) -> None:
    triad = profile.measurement("mem_triad_all")
    copy = profile.measurement("mem_copy_1t")
    read = profile.measurement("disk_read")
    assert triad is not None and "counted 5x array bytes" in triad.method and "MiB per array" in triad.method
    assert copy is not None and "counted 2x array bytes" in copy.method
    assert read is not None and "posix_fadvise(DONTNEED)" in read.method


def test_disk_probe_file_is_removed(profiled: tuple[HardwareProfile, Any, Path]) -> None:
    assert list(profiled[2].iterdir()) == []


def test_progress_is_called_before_every_step_in_order(
    profiled: tuple[HardwareProfile, list[tuple[str, int, int]], Path],
) -> None:
    calls = profiled[1]
    assert calls == [(name, i, len(STEP_NAMES)) for i, name in enumerate(STEP_NAMES)]


def test_profile_round_trips_through_json(profile: HardwareProfile) -> None:
    data = json.loads(json.dumps(profile.to_dict(), allow_nan=False))
    assert HardwareProfile.from_dict(data) == profile
    assert profile.fingerprint == fingerprint(profile.static)
    assert profile.mode == "quick" and profile.duration_s > 0 and profile.created_at > 1.6e9


def test_quick_profile_is_quick(profile: HardwareProfile) -> None:
    assert profile.duration_s <= 60


def test_summary(profile: HardwareProfile) -> None:
    summary = profile.summary()
    gemm = [profile.measurement(n) for n in ("numpy_gemm_fp32_all", "ort_gemm_fp32_all")]
    assert summary["peak_gflops"] == max(m.median for m in gemm if m is not None and m.median is not None)
    triad = profile.measurement("mem_triad_all")
    assert triad is not None and summary["mem_bw_gbs"] == triad.median
    assert summary["mem_total_gb"] == profile.static.memory_total_bytes / 1e9
    assert summary["cpu"] == profile.static.cpu_model
    assert summary["cores"] == profile.static.physical_cores
    assert [g["name"] for g in summary["gpus"]] == [g.name for g in profile.static.gpus]
    json.dumps(summary, allow_nan=False)


# --- static facts and fingerprint ---------------------------------------------------------------


def test_static_facts_are_sane() -> None:
    static = collect_static()
    assert static.logical_cores >= static.physical_cores >= 1
    assert 1 <= static.usable_cpus <= static.logical_cores
    assert static.memory_total_bytes > 0 and 0 < static.memory_available_bytes <= static.memory_total_bytes
    assert "CPUExecutionProvider" in static.ort_providers
    assert static.cpu_model and static.os and static.numpy_version == np.__version__
    assert all(c.size_bytes > 0 and c.instances >= 1 for c in static.caches)
    if Path("/sys/devices/system/cpu/cpu0/cache").is_dir():
        assert any(c.level >= 2 for c in static.caches)
    if static.machine == "x86_64":
        assert "sse2" in static.isa_flags


def test_fingerprint_is_stable_and_tracks_hardware_facts() -> None:
    a, b = collect_static(), collect_static()
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 64 and int(fingerprint(a), 16) >= 0
    gpu_info = GpuInfo(0, "Some GPU", 80 * 2**30, "9.0", 132)
    changed = [
        dataclasses.replace(a, cpu_model=a.cpu_model + " v2"),
        dataclasses.replace(a, physical_cores=a.physical_cores + 1),
        dataclasses.replace(a, usable_cpus=a.usable_cpus + 1),
        dataclasses.replace(a, isa_flags=(*a.isa_flags, "avx512f")),
        dataclasses.replace(a, memory_total_bytes=a.memory_total_bytes + 2 * 2**30),
        dataclasses.replace(a, gpus=(gpu_info,)),
        dataclasses.replace(a, onnxruntime_version="0.0.1"),
        dataclasses.replace(a, ort_providers=(*a.ort_providers, "CUDAExecutionProvider")),
        dataclasses.replace(a, numpy_version="0.0.1"),
    ]
    assert len({fingerprint(s) for s in changed} | {fingerprint(a)}) == len(changed) + 1
    volatile = dataclasses.replace(a, memory_available_bytes=a.memory_available_bytes // 2)
    assert fingerprint(volatile) == fingerprint(a)
    assert fingerprint(dataclasses.replace(a, isa_flags=tuple(reversed(a.isa_flags)))) == fingerprint(a)


def test_isa_flags_keep_simd_features_only() -> None:
    x86 = {
        "flags": "fpu sse sse2 ssse3 sse4_1 avx avx2 fma avx512f avx512_vnni amx_tile smep smap hypervisor"
    }
    assert isa_flags(x86) == (
        "amx_tile",
        "avx",
        "avx2",
        "avx512_vnni",
        "avx512f",
        "fma",
        "sse",
        "sse2",
        "sse4_1",
        "ssse3",
    )
    arm = {"Features": "fp asimd evtstrm aes asimddp sve sve2 i8mm bf16 sme"}
    assert isa_flags(arm) == ("asimd", "asimddp", "bf16", "i8mm", "sme", "sve", "sve2")


def test_caches_count_instances_across_cpus(tmp_path: Path) -> None:
    for cpu, shared in (("cpu0", "0-1"), ("cpu1", "0-1"), ("cpu2", "2-3"), ("cpu3", "2-3")):
        for index, (level, kind, size, own) in enumerate(
            [(1, "Data", "48K", cpu[3:]), (3, "Unified", "32768K", shared)]
        ):
            d = tmp_path / cpu / "cache" / f"index{index}"
            d.mkdir(parents=True)
            for key, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", own)):
                (d / key).write_text(f"{value}\n")
    caches = collect_caches(tmp_path)
    assert caches == (CacheInfo(1, "Data", 48 * 2**10, 4), CacheInfo(3, "Unified", 32 * 2**20, 2))
    assert memory.last_level_cache_bytes(caches) == 64 * 2**20


# --- (de)serialisation is strict -----------------------------------------------------------------


def _measurement(**changes: Any) -> dict[str, Any]:
    m = Measurement.from_samples("x", "GB/s", "how", 1, [1.0, 2.0, 3.0]).to_dict()
    m.update(changes)
    return m


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        _measurement(extra=1),
        {k: v for k, v in _measurement().items() if k != "cv"},
        _measurement(threads="1"),
        _measurement(threads=True),
        _measurement(threads=-1),
        _measurement(median=float("nan")),
        _measurement(median=5.0),
        _measurement(median=None),
        _measurement(repeats=4),
        _measurement(samples=[1.0, "2", 3.0]),
        _measurement(samples=[1.0, -2.0, 3.0], median=1.0),
        _measurement(unavailable_reason="gone"),
        {**Measurement.unavailable("y", "W", "how", 0, "no RAPL").to_dict(), "repeats": 3},
        _measurement(name=""),
        _measurement(cv=0.9),
        _measurement(background_load=1.5),
    ],
)
def test_measurement_from_dict_rejects_malformed_input(bad: object) -> None:
    with pytest.raises(ValueError):
        Measurement.from_dict(bad)


def test_measurement_round_trip_including_unavailable() -> None:
    for m in (
        Measurement.from_samples("x", "GB/s", "how", 2, [1.0, 2.0, 4.0]),
        Measurement.unavailable("y", "W", "how", 0, "no RAPL"),
    ):
        assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def _mutations(profile: HardwareProfile) -> list[dict[str, Any]]:
    good = profile.to_dict()

    def changed(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps(good))
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return data

    return [
        changed(("schema",), 99),
        changed(("mode",), "slow"),
        changed(("fingerprint",), "0" * 64),
        changed(("created_at",), "yesterday"),
        changed(("duration_s",), -1.0),
        changed(("measurements",), {"a": 1}),
        changed(("measurements",), [*good["measurements"], good["measurements"][0]]),
        changed(("static", "cpu_model"), 7),
        changed(("static", "physical_cores"), 0),
        changed(("static", "isa_flags"), "avx2"),
        changed(("static", "caches"), [{"level": 1}]),
        changed(("static", "gpus"), [{"name": "x"}]),
        changed(("static", "memory_total_bytes"), KeyError),
        changed(("static", "surprise"), 1),
        changed(("measurements", 0, "samples"), []),
    ]


def test_profile_from_dict_rejects_malformed_input(profile: HardwareProfile) -> None:
    bad: object
    for bad in [None, "profile", [], *_mutations(profile)]:
        with pytest.raises(ValueError):
            HardwareProfile.from_dict(bad)


# --- the timed ONNX models compute what they claim ------------------------------------------------


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_ort_gemm_models_match_numpy(kind: ort_gemm.GemmKind) -> None:
    n = 96
    gemm = ort_gemm.GemmSession(n, kind, threads=2, seed=3)
    for seed in (10, 11):
        a = ort_gemm.random_input(n, kind, seed=seed)
        gemm.set_input(a)
        y = gemm.run()
        expected = ort_gemm.reference(a, gemm.b, kind)
        if kind == "fp32":
            assert y.dtype == np.float32
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
        else:
            assert y.dtype == np.int32 and a.dtype == np.uint8 and gemm.b.dtype == np.int8
            assert a.max() > 127 and gemm.b.min() < 0  # the full uint8 input range, signed weights
            np.testing.assert_array_equal(y, expected)
    gemm.check(rows=n)


def test_ort_gemm_model_is_a_single_matmul_node() -> None:
    import onnx

    kinds: list[tuple[ort_gemm.GemmKind, str]] = [("fp32", "MatMul"), ("int8", "MatMulInteger")]
    for kind, op in kinds:
        model = onnx.load_from_string(ort_gemm.build_gemm_model(32, kind)[0])
        assert [node.op_type for node in model.graph.node] == [op]


# --- parts ---------------------------------------------------------------------------------------


def test_median_and_cv() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert stats.cv([2.0, 2.0, 2.0]) == 0.0
    assert stats.cv([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)
    with pytest.raises(ValueError):
        stats.median([])


def test_time_calls_warms_up_and_sizes_samples() -> None:
    calls = []
    timing = stats.time_calls(lambda: calls.append(1), repeats=3, min_sample_s=0.001)
    assert len(timing.seconds_per_call) == 3
    assert len(calls) == 2 + 3 * timing.calls_per_sample and timing.calls_per_sample > 1


def _fake_rapl(root: Path, energies: list[int], max_range: int = 1000) -> list[Path]:
    files = []
    for i, energy in enumerate(energies):
        d = root / f"intel-rapl:{i}"
        (d / f"intel-rapl:{i}:0").mkdir(parents=True)  # a sub-domain: must not be counted
        (d / "name").write_text(f"package-{i}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        files.append(d / "energy_uj")
    return files


def test_rapl_meter_sums_packages_and_handles_wraparound(tmp_path: Path) -> None:
    files = _fake_rapl(tmp_path, [900, 100])
    domains, reason = power.package_domains(tmp_path)
    assert reason == "" and [d.name for d in domains] == ["package-0", "package-1"]
    meter = power.RaplMeter(domains)
    meter.begin()
    files[0].write_text("200\n")  # wrapped: 900 -> 1000 -> 200 is 300 uJ
    files[1].write_text("600\n")  # 500 uJ
    meter.end(0.5)
    assert meter.watts == [pytest.approx(800e-6 / 0.5)]
    assert power.energy_delta_uj(10, 5, 100) == 95


def test_rapl_absent_gives_a_reason(tmp_path: Path) -> None:
    assert power.package_domains(tmp_path / "nope")[1]
    assert "no intel-rapl" in power.package_domains(tmp_path)[1]


def test_memory_array_size_exceeds_llc_and_respects_free_memory() -> None:
    caches = (CacheInfo(3, "Unified", 32 * 2**20, 2),)
    size, note = memory.array_size(caches, min_bytes=64 * 2**20, available_bytes=2**40)
    assert size == 4 * 64 * 2**20 and "4.0x LLC" in note
    size, note = memory.array_size(caches, min_bytes=64 * 2**20, available_bytes=2**30)
    assert size == 2**30 // 8 and "capped" in note


def test_memory_bandwidth_small_arrays_multi_thread() -> None:
    out = memory.memory_bandwidth(
        scope="all", threads=3, array_bytes=2**20, size_note="1 MiB", repeats=3, min_sample_s=0.001
    )
    assert [m.name for m in out] == ["mem_copy_all", "mem_triad_all"]
    assert all(m.available and m.threads == 3 for m in out)


def test_disk_read_reports_missing_directory(tmp_path: Path) -> None:
    m = disk.disk_read(tmp_path / "missing", size=disk.CHUNK, repeats=2)
    assert not m.available and "missing" in (m.unavailable_reason or "")


def test_disk_eviction_is_verified(tmp_path: Path) -> None:
    m = disk.disk_read(tmp_path, size=2 * disk.CHUNK, repeats=2)
    assert m.available and m.repeats == 2
    assert "posix_fadvise" in m.method


def test_gpu_figures_without_cuda_say_why() -> None:
    torch, reason = gpu.load_torch_cuda()
    if torch is not None:
        pytest.skip("a CUDA device is present")
    out = gpu.gpu_measurements(matmul_n=64, copy_bytes=2**20, repeats=2, min_sample_s=0.01)
    assert {m.name for m in out} == {
        "gpu_d2d_copy",
        "gpu_matmul_fp32",
        "gpu_matmul_fp16",
        "gpu_matmul_bf16",
        "gpu_power",
    }
    assert all(not m.available and m.unavailable_reason == reason for m in out)


def test_static_facts_round_trip() -> None:
    static = collect_static()
    assert StaticFacts.from_dict(json.loads(json.dumps(static.to_dict()))) == static


# --- GPU code path on a stand-in torch ----------------------------------------------------------
# No CUDA machine runs these tests, so the GPU module's control flow (device loop, event timing,
# TF32 switch, bf16 check, NVML lookup by PCI id, unit conversions) is exercised against a small
# numpy-backed stand-in for torch and pynvml. It proves the wiring, not real GPU figures.


class _FakeTensor(np.ndarray):
    def copy_(self, src: np.ndarray) -> _FakeTensor:
        np.copyto(self, src)
        return self

    def to(self, dtype: Any) -> _FakeTensor:
        return np.asarray(self, dtype=dtype).view(_FakeTensor)


def _fake_torch() -> types.ModuleType:
    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.t = 0.0

        def record(self) -> None:
            self.t = time.perf_counter()

        def synchronize(self) -> None:
            pass

        def elapsed_time(self, end: Event) -> float:
            return (end.t - self.t) * 1e3

    props = types.SimpleNamespace(
        name="Stand-in GPU",
        total_memory=8 * 2**30,
        major=9,
        minor=0,
        multi_processor_count=4,
        pci_domain_id=0,
        pci_bus_id=0x3B,
        pci_device_id=0,
    )
    torch = types.ModuleType("torch")
    torch.__version__ = "0.0+standin"  # type: ignore[attr-defined]
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_available=lambda: True,
        device_count=lambda: 1,
        get_device_properties=lambda index: props,
        Event=Event,
        synchronize=lambda: None,
        device=lambda index: contextlib.nullcontext(),
        is_bf16_supported=lambda: False,
        empty_cache=lambda: None,
    )
    torch.backends = types.SimpleNamespace(  # type: ignore[attr-defined]
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=True))
    )
    rng = np.random.default_rng(0)
    torch.uint8, torch.float32, torch.float16, torch.bfloat16 = np.uint8, np.float32, np.float16, None  # type: ignore[attr-defined]
    torch.empty = lambda n, dtype, device: np.empty(n, dtype=dtype).view(_FakeTensor)  # type: ignore[attr-defined]
    torch.empty_like = lambda t: np.empty_like(t).view(_FakeTensor)  # type: ignore[attr-defined]
    torch.randn = lambda *shape, device: rng.standard_normal(shape, dtype=np.float32).view(_FakeTensor)  # type: ignore[attr-defined]
    torch.matmul = lambda a, b, out: np.matmul(a, b, out=out)  # type: ignore[attr-defined]
    return torch


def _fake_nvml() -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    energy = {"mj": 0}

    def read(handle: str) -> int:
        assert handle == "handle:00000000:3B:00.0"
        energy["mj"] += 50  # 50 mJ per read
        return energy["mj"]

    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByPciBusId = lambda bus_id: f"handle:{bus_id}"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetTotalEnergyConsumption = read  # type: ignore[attr-defined]
    return nvml


def test_gpu_code_path_on_a_stand_in_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = _fake_torch()
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    gpus, version = gpu.collect_gpus()
    assert gpus == (GpuInfo(0, "Stand-in GPU", 8 * 2**30, "9.0", 4),) and version == "0.0+standin"
    out = {
        m.name: m for m in gpu.gpu_measurements(matmul_n=64, copy_bytes=2**16, repeats=3, min_sample_s=0.002)
    }
    assert set(out) == {
        "gpu0_d2d_copy",
        "gpu0_matmul_fp32",
        "gpu0_matmul_fp16",
        "gpu0_matmul_bf16",
        "gpu0_power",
    }
    for name in ("gpu0_d2d_copy", "gpu0_matmul_fp32", "gpu0_matmul_fp16", "gpu0_power"):
        median = out[name].median
        assert out[name].available and out[name].repeats == 3 and median is not None and median > 0
    assert out["gpu0_matmul_bf16"].unavailable_reason == "device has no bf16 support"
    assert torch.backends.cuda.matmul.allow_tf32 is True  # restored


def test_gpu_failure_marks_the_device_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = _fake_torch()

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("CUDA out of memory")

    torch.empty = out_of_memory  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    out = gpu.gpu_measurements(matmul_n=64, copy_bytes=2**16, repeats=2, min_sample_s=0.001)
    assert len(out) == 5 and all(m.unavailable_reason == "RuntimeError: CUDA out of memory" for m in out)
