"""How many delivery processes `tocsin serve` runs, and the restart backoff."""

from __future__ import annotations

import pytest

from tocsin.core.policy.processes import (
    RESTART_CEILING,
    RESTART_FIRST,
    STABLE_SECONDS,
    Restarts,
    broker_threads,
    delivered_in_serve,
    delivery_processes,
    quota_files,
    usable_cores,
)


@pytest.mark.parametrize(("cpu_count", "expected"), [(None, 0), (1, 0), (2, 1), (4, 3), (16, 15)])
def test_the_default_is_one_process_per_spare_core(cpu_count: int | None, expected: int) -> None:
    """Catches a default that forks on one core (where a child only takes turns with
    the main process) or leaves a spare core idle."""
    assert delivery_processes(None, cpu_count) == expected


@pytest.mark.parametrize("configured", [0, 1, 5])
def test_a_configured_count_wins_over_the_cores(configured: int) -> None:
    """Catches ``processes = 0`` (in-process, as before) being overridden by the core
    count."""
    assert delivery_processes(configured, 8) == configured
    assert delivery_processes(configured, 1) == configured


@pytest.mark.parametrize(
    ("cpu_count", "expected"), [(None, 1), (1, 1), (2, 1), (3, 1), (4, 2), (16, 8)]
)
def test_the_broker_runs_on_half_the_cores(cpu_count: int | None, expected: int) -> None:
    """Catches an embedded broker given every core (its Go runtime then spins for work
    the cores busy with tocsin cannot give it) or none at all."""
    assert broker_threads(cpu_count) == expected


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [
        (64, "200000 100000", 2),  # cgroup v2, a container given two CPUs
        (64, "150000 100000", 2),  # one and a half: rounded up
        (64, "50000 100000", 1),
        (64, "max 100000", 64),  # v2, no limit
        (64, "-1 100000", 64),  # v1, no limit
        (2, "800000 100000", 2),  # the quota above the CPUs it may run on
        (8, None, 8),  # no cgroup file
        (8, "garbage", 8),
        (None, "300000 100000", 3),
        (None, None, None),
    ],
)
def test_the_usable_cores_are_capped_by_a_container_s_cpu_limit(
    affinity: int | None, quota: str | None, expected: int | None
) -> None:
    """Catches serve sized to the host's cores in a container limited to a few: 63
    delivery children taking turns on two CPUs."""
    assert usable_cores(affinity, quota) == expected


V1_ROOT = ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")


@pytest.mark.parametrize(
    ("self_cgroup", "expected"),
    [
        # a systemd service on cgroup v2: CPUQuota= is its own cgroup's cpu.max
        (
            "0::/system.slice/tocsin.service\n",
            [
                ("system.slice/tocsin.service/cpu.max",),
                ("system.slice/cpu.max",),
                ("cpu.max",),
                V1_ROOT,
            ],
        ),
        # a container with its own cgroup namespace: its cgroup is the root
        ("0::/\n", [("cpu.max",), V1_ROOT]),
        # cgroup v1 (and a hybrid system's v2 line beside it, with no cpu controller)
        (
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
            [
                ("cpu/docker/abc/cpu.cfs_quota_us", "cpu/docker/abc/cpu.cfs_period_us"),
                ("cpu/docker/cpu.cfs_quota_us", "cpu/docker/cpu.cfs_period_us"),
                V1_ROOT,
                ("cpu.max",),
            ],
        ),
        # nothing known (no /proc/self/cgroup): the roots, as before
        ("", [("cpu.max",), V1_ROOT]),
        ("garbage\n1:cpu:relative\n", [("cpu.max",), V1_ROOT]),
    ],
)
def test_the_quotas_read_are_the_cgroup_s_own_and_every_ancestor_s(
    self_cgroup: str, expected: list[tuple[str, ...]]
) -> None:
    """Catches a quota read at the root of the cgroup file system only: a systemd
    service given ``CPUQuota=100%`` on a 16-core host has it in its own cgroup, and
    sized to the root's ``max`` it would start 15 delivery children on one CPU."""
    assert quota_files(self_cgroup) == expected


def test_quotas_cap_one_after_another() -> None:
    """Catches a later ``max`` (an ancestor without a quota) undoing an earlier cap."""
    cores: int | None = 16
    for quota in ("100000 100000", "max 100000", "300000 100000"):
        cores = usable_cores(cores, quota)
    assert cores == 1


def test_a_crash_loop_backs_off_to_the_ceiling() -> None:
    """Catches a supervisor that restarts a child crashing at start without waiting
    (a spinning loop) or waits ever longer (a worker gone for good)."""
    restarts = Restarts()
    delays = [restarts.after_exit(0.1) for _ in range(10)]
    assert delays[0] == RESTART_FIRST
    assert delays == sorted(delays)
    assert delays[-1] == RESTART_CEILING
    assert sum(delays[:6]) > 10  # six quick crashes take more than 10 s, not 3 s


def test_a_child_that_ran_long_enough_restarts_quickly_again() -> None:
    """Catches a backoff that never forgives: a child that crashed twice last week and
    then once today waits the first delay, not the ceiling."""
    restarts = Restarts()
    for _ in range(8):
        restarts.after_exit(0.1)
    assert restarts.after_exit(STABLE_SECONDS) == RESTART_FIRST
    assert restarts.after_exit(1.0) == 2 * RESTART_FIRST


LIMITS = {"ops": None, "slack": 30, "pager": None}


def test_without_children_serve_delivers_to_every_receiver() -> None:
    """Catches a throttled receiver left with no worker at all when nothing else
    delivers (``processes = 0``, one core)."""
    assert delivered_in_serve(LIMITS, 0, in_serve=True) == ["ops", "slack", "pager"]
    assert delivered_in_serve(LIMITS, 0, in_serve=False) == ["ops", "slack", "pager"]


def test_beside_children_serve_delivers_to_the_receivers_not_throttled() -> None:
    """Catches serve adding a delivery process to a receiver with ``max_per_minute``,
    which caps sends per process: its cap would rise by one process's worth, past what
    the operator set for a receiver that limits what it accepts."""
    assert delivered_in_serve(LIMITS, 1, in_serve=True) == ["ops", "pager"]
    assert delivered_in_serve(LIMITS, 3, in_serve=True) == ["ops", "pager"]


def test_in_serve_off_leaves_delivery_to_the_children() -> None:
    """Catches ``[delivery] in_serve = false`` ignored."""
    assert delivered_in_serve(LIMITS, 1, in_serve=False) == []
