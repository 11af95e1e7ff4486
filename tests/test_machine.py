"""What ``tocsin serve`` takes of the machine it runs on: the cores it sizes its delivery
children and its embedded broker to (``tocsin.service.machine_cores``: those the
process may run on, not the host's), and the open files its connections need
(``allow_open_files``)."""

from __future__ import annotations

import resource
import subprocess
import sys

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
