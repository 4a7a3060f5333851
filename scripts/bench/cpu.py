"""CPU meters: CPU seconds of processes and of the whole machine over a window (psutil).

Wall time on a shared machine moves with everybody else's load; CPU time spent by the measured
processes moves much less, and the machine's busy time minus ours says how much the others took
(the "other CPU" figure every benchmark prints next to its results).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import psutil


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, all processes)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0))


def steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def own_cpu_s(pid: int) -> float:
    """CPU seconds of one process, without its children (reaped children's whole lifetime would land
    at the moment they are reaped, in a random window)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants; 0 for a process that is gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def share_of_all_cpus(cpu_s: float, elapsed_s: float) -> float:
    """``cpu_s`` over ``elapsed_s`` as a percentage of all CPUs."""
    return cpu_s / (elapsed_s * (os.cpu_count() or 1)) * 100 if elapsed_s > 0 else 0.0


class CpuWindow:
    """CPU used by one process (``pid``), by this process and by everything else between
    :meth:`start` (also called on construction) and :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start()

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.d0, self.p0, self.b0 = own_cpu_s(self.pid), time.process_time(), busy_cpu_s()

    def stop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        daemon = own_cpu_s(self.pid) - self.d0
        own = time.process_time() - self.p0
        other = max(0.0, busy_cpu_s() - self.b0 - daemon - own)
        return {
            "elapsed_s": elapsed,
            "daemon_cpu_s": daemon,
            "client_cpu_s": own,
            "other_cpu_pct": share_of_all_cpus(other, elapsed),
        }


class CpuMeter:
    """CPU used by our processes (this one and ``pids``, with their descendants) and by everything
    else, over a span. Call :meth:`sample` just before killing one of the processes: a process that
    is gone keeps the CPU time it was last seen with (CPU time only grows, so the maximum reading is
    the latest)."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self.t0 = time.perf_counter()
        self.busy0 = busy_cpu_s()
        self.steal0 = steal_s()
        self.first = {p: tree_cpu_s(p) for p in self.pids}
        self.last = dict(self.first)

    def sample(self) -> None:
        for p in self.pids:
            self.last[p] = max(self.last[p], tree_cpu_s(p))

    def other_pct(self) -> float:
        """CPU used by other processes since the start, in % of all CPUs."""
        self.sample()
        elapsed = time.perf_counter() - self.t0
        busy = busy_cpu_s() - self.busy0
        ours = sum(self.last.values()) - sum(self.first.values())
        return share_of_all_cpus(max(0.0, busy - ours), elapsed)

    def steal_pct(self) -> float:
        """CPU time the hypervisor gave to other guests since the start, in % of all CPUs."""
        return share_of_all_cpus(steal_s() - self.steal0, time.perf_counter() - self.t0)


def wait_quiet(read_cpu_s: Callable[[], float], *, below: float, window_s: float, max_wait_s: float) -> float:
    """Measure ``read_cpu_s`` (CPU seconds of the processes of interest) over windows of
    ``window_s`` until they use less than ``below`` of one core, or ``max_wait_s`` has passed (at
    least one window); returns the last share of a core (1.0 = one core busy)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        c0, t0 = read_cpu_s(), time.monotonic()
        time.sleep(window_s)
        share = (read_cpu_s() - c0) / (time.monotonic() - t0)
        if share < below or time.monotonic() > deadline:
            return share
