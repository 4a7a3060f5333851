"""Profiling through a real daemon: on demand, cached per hardware fingerprint, redone on change."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable

import pytest

from accel_node.core import endpoints as E
from accel_node.errors import ApiError
from tests.support.daemons import Daemon, wait_until

pytestmark = pytest.mark.multinode


def profile_of(daemon: Daemon) -> dict[str, object] | None:
    return daemon.api.hardware.get().profile


def job_of(daemon: Daemon) -> dict[str, object]:
    job = daemon.api.hardware.profile_job().job
    assert job is not None
    return job


def test_profile_is_measured_cached_and_redone_when_hardware_changes(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon("node")  # [profile] auto = off in tests
    # Static facts come from a worker process shortly after start.
    wait_until(lambda: daemon.api.hardware.get().static is not None, what="static facts")
    hardware = daemon.api.hardware.get().model_dump()
    assert hardware["profile"] is None and hardware["job"] is None
    assert hardware["static"]["logical_cores"] >= 1 and len(hardware["fingerprint"]) == 64
    assert hardware["summary"]["profiled"] is False and hardware["summary"]["peak_gflops"] is None

    # On demand through the CLI, which follows the run's progress.
    result = daemon.cli("profile", "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    first = shown["profile"]
    assert first["mode"] == "quick" and first["fingerprint"] == hardware["fingerprint"]
    measured = [m for m in first["measurements"] if m["median"] is not None]
    assert len(measured) >= 6
    for m in measured:
        assert math.isfinite(m["median"]) and m["median"] > 0, m
        assert m["cv"] is not None and m["cv"] >= 0 and m["method"], m
    assert shown["summary"]["profiled"] is True and shown["summary"]["peak_gflops"] > 0
    assert shown["job"]["running"] is False and shown["job"]["error"] is None

    # A restart on the same hardware reuses the stored profile and does not measure again,
    # even with automatic profiling on.
    assert daemon.stop() == 0
    daemon.env["ACCEL_NODE_PROFILE_AUTO"] = "quick"
    daemon.start().wait_ready()
    wait_until(lambda: profile_of(daemon) is not None, what="cached profile")
    again = daemon.api.hardware.get().model_dump()
    assert again["profile"]["created_at"] == first["created_at"]
    assert again["job"] is None

    # The record the node publishes carries the measured figures.
    summary = again["summary"]
    assert summary["peak_gflops"] == pytest.approx(shown["summary"]["peak_gflops"])

    # A forced re-profile replaces the stored one.
    response = daemon.api.transport.send(E.PROFILE_START, body={"mode": "quick"})
    assert response.status_code == 202 and response.json()["job"]["running"] is True
    again_started = daemon.api.hardware.start_profile("quick").job
    assert again_started is not None and again_started["started_at"] == response.json()["job"]["started_at"]
    # one run at a time
    wait_until(lambda: not job_of(daemon)["running"], timeout=180, interval=0.5)
    replaced = profile_of(daemon)
    assert replaced is not None and replaced["created_at"] > first["created_at"]

    # Different hardware (simulated by the stored fingerprint no longer matching): the next start
    # finds no profile for this machine and measures again by itself.
    assert daemon.stop() == 0
    with sqlite3.connect(daemon.home / "node.db") as db:
        db.execute("UPDATE hardware_profiles SET fingerprint = 'another-machine'")
    daemon.start().wait_ready()
    wait_until(lambda: daemon.api.hardware.profile_job().job is not None, what="re-profile")
    job = daemon.api.hardware.profile_job().job
    assert job is not None and job["mode"] == "quick"
    wait_until(lambda: not job_of(daemon)["running"], timeout=180, interval=0.5)
    remeasured = profile_of(daemon)
    assert remeasured is not None and remeasured["fingerprint"] == hardware["fingerprint"]
    assert remeasured["created_at"] > replaced["created_at"]  # type: ignore[operator]


def test_profile_request_is_validated(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("node")
    for body in ({"mode": "turbo"}, {"mode": "quick", "x": 1}):
        with pytest.raises(ApiError) as refused:
            daemon.api.transport.send(E.PROFILE_START, body=body)
        assert refused.value.http_status == 422
    with pytest.raises(ApiError) as refused:
        daemon.api.peers.perf("not-a-peer")
    assert refused.value.http_status == 400
