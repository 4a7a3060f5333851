"""CPU package power from RAPL energy counters (Linux powercap).

Each package domain (``/sys/class/powercap/intel-rapl:N``, also used for AMD Zen) has a
monotonically increasing ``energy_uj`` that wraps at ``max_energy_range_uj``. Power over a sample
is the energy difference (wrap-corrected) divided by the sample's wall time, summed over packages.
Sub-domains (``intel-rapl:N:M``: cores, uncore, dram) are not added: they are part of the package.

Since Linux 5.10 ``energy_uj`` is readable by root only (a side channel: PLATYPUS), and most VMs
expose no RAPL at all; both cases give a reason instead of a figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
_PACKAGE_DIR = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class RaplDomain:
    path: Path
    name: str
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


def package_domains(root: Path = POWERCAP) -> tuple[list[RaplDomain], str]:
    """The readable package domains, or ``([], reason)`` when there are none or none readable."""
    if not root.is_dir():
        return [], f"{root} does not exist (no powercap/RAPL driver, e.g. not Linux or a VM)"
    domains = []
    for path in sorted(root.iterdir()):
        if not _PACKAGE_DIR.match(path.name):
            continue
        try:
            domain = RaplDomain(
                path=path,
                name=(path / "name").read_text().strip(),
                max_range_uj=int((path / "max_energy_range_uj").read_text()),
            )
            domain.read_uj()
        except PermissionError:
            return [], f"{path / 'energy_uj'} is not readable (root only since Linux 5.10)"
        except (OSError, ValueError) as exc:
            return [], f"{path}: {exc}"
        domains.append(domain)
    if not domains:
        return [], f"no intel-rapl:N package domains under {root}"
    return domains, ""


def energy_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """Energy between two counter readings, allowing for one wrap-around."""
    return after - before if after >= before else after + max_range_uj - before


class RaplMeter:
    """A :class:`~accel_node.profile.stats.SampleHook` that records package watts per sample."""

    def __init__(self, domains: list[RaplDomain]) -> None:
        self.domains = domains
        self.watts: list[float] = []
        self._start: list[int] = []

    def begin(self) -> None:
        self._start = [d.read_uj() for d in self.domains]

    def end(self, seconds: float) -> None:
        joules = (
            sum(
                energy_delta_uj(start, d.read_uj(), d.max_range_uj)
                for d, start in zip(self.domains, self._start, strict=True)
            )
            / 1e6
        )
        self.watts.append(joules / seconds)
