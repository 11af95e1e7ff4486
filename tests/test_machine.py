"""What ``tocsin serve`` takes of the machine it runs on: the cores it sizes its delivery
children and its embedded broker to (``tocsin.service.machine_cores``: those the
process may run on, not the host's), and the open files its connections need
(``allow_open_files``)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from tocsin.service import cpu_quotas, machine_cores

PINNED = (
    "import os\n"
    "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
    "from tocsin.service import machine_cores\n"
    "print(machine_cores(), os.cpu_count())\n"
)

RAISED = (
    "import resource\n"
    "from tocsin.service import allow_open_files\n"
    "before = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "allow_open_files()\n"
    "print(*before, *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
)


def test_a_process_pinned_to_one_cpu_counts_one() -> None:
    """A process pinned to one CPU (``taskset``, a container's cpuset) counts one:
    catches the host's count (``os.cpu_count``) used instead, which would start a
    delivery child per host core to take turns on that one."""
    done = subprocess.run(
        [sys.executable, "-c", PINNED], capture_output=True, text=True, timeout=60, check=True
    )
    counted, host = done.stdout.split()
    assert counted == "1"
    assert int(host) >= 1


def test_the_soft_limit_of_open_files_is_raised_to_the_hard_one() -> None:
    """A process started with systemd's soft limit (1,024, or this machine's hard limit
    if lower) below its hard one ends with the hard one: catches a service that keeps
    the soft limit its connections (``[delivery] concurrency`` per receiver and
    process) could run out of in a storm."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard // 2)

    def lowered() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    done = subprocess.run(
        [sys.executable, "-c", RAISED],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=lowered,
    )
    soft_before, hard_before, soft_after, hard_after = map(int, done.stdout.split())
    assert (soft_before, hard_before) == (low, hard)
    assert (soft_after, hard_after) == (hard, hard)


def test_a_systemd_service_s_cpu_quota_is_read_from_its_own_cgroup(tmp_path: Path) -> None:
    """A service whose cgroup (``0::/system.slice/tocsin.service``, systemd's
    ``CPUQuota=100%``) allows one CPU, under a slice and a root that allow any: its
    quota and its ancestors' are read, its own first, and it counts one core. Catches
    the root's ``cpu.max`` read alone (``max``: every core of the host). Files in a
    directory laid out as ``/sys/fs/cgroup`` is, read by the same code."""
    cgroups = tmp_path / "cgroup"
    service = cgroups / "system.slice" / "tocsin.service"
    service.mkdir(parents=True)
    (service / "cpu.max").write_text("100000 100000\n")
    (cgroups / "system.slice" / "cpu.max").write_text("max 100000\n")
    (cgroups / "cpu.max").write_text("max 100000\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/system.slice/tocsin.service\n")
    assert cpu_quotas(cgroups, self_cgroup) == ["100000 100000", "max 100000", "max 100000"]
    assert machine_cores(cgroups, self_cgroup) == 1


def test_without_proc_self_cgroup_the_roots_quota_is_read(tmp_path: Path) -> None:
    """No ``/proc/self/cgroup`` (a sandbox): the quota at the root is still read (a
    container's v1 quota of 1.5 CPUs, rounded up to two), not nothing."""
    cgroups = tmp_path / "cgroup"
    (cgroups / "cpu").mkdir(parents=True)
    (cgroups / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (cgroups / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quotas(cgroups, tmp_path / "absent") == ["150000 100000"]
