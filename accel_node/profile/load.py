"""How busy the machine was with other work while a figure was measured.

A figure taken while another process competes for the CPUs is low for reasons that have nothing
to do with the hardware (on a 2-CPU machine one busy neighbour halves an all-threads GEMM). The
profiler cannot prevent that, but it can say so: each measurement carries ``background_load``,
the share of the machine's CPU capacity used by anything other than this process and its reaped
children (the BLAS worker) -- other processes, kernel threads and hypervisor steal -- over the step.
Interrupt time is left out (our own disk reads cause most of it), but kernel threads that finish
I/O still count, so the disk step reads a little high. Threads of this same process are not
counted (they are indistinguishable from the measurement's).
"""

from __future__ import annotations

import time

import psutil


def _system_busy_s() -> float:
    t = psutil.cpu_times()
    # guest time is already included in user time on Linux; idle and iowait are not busy
    fields = ("user", "nice", "system", "steal")
    return sum(float(getattr(t, name, 0.0)) for name in fields)


def _own_busy_s(process: psutil.Process) -> float:
    t = process.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


class BackgroundLoad:
    """Started at construction; :meth:`fraction` is the foreign CPU share since then, in [0, 1]."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cpus = psutil.cpu_count() or 1
        self._start = (time.perf_counter(), _system_busy_s(), _own_busy_s(self._process))

    def fraction(self) -> float | None:
        """None when the interval was too short for the kernel's 10 ms CPU-time ticks to mean much."""
        wall = time.perf_counter() - self._start[0]
        if wall < 0.2:
            return None
        foreign = (_system_busy_s() - self._start[1]) - (_own_busy_s(self._process) - self._start[2])
        return min(1.0, max(0.0, foreign / (wall * self._cpus)))
