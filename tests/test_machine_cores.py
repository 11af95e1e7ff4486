"""The cores ``tocsin serve`` sizes its delivery children and its embedded broker to
(``tocsin.service.machine_cores``): those the process may run on, not the host's."""

from __future__ import annotations

import subprocess
import sys

PINNED = (
    "import os\n"
    "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
    "from tocsin.service import machine_cores\n"
    "print(machine_cores(), os.cpu_count())\n"
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
