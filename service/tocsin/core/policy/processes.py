"""How many delivery processes ``tocsin serve`` runs, when it starts a dead one again
(pure: the supervisor in ``pipeline/supervisor.py`` carries it out), and how many
threads the embedded broker beside them gets (``bus/embedded.py``).

``tocsin serve`` keeps the router, the recorder, the clock and the API in its own
process, which is busy with commits; delivery workers are stateless and need nothing
of it but the broker, so on a machine with a spare core they run beside it as
``tocsin deliver`` children and the two halves no longer share one core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tocsin.core.policy.backoff import Backoff

RESTART_FIRST = 0.5  # seconds before the first restart: a one-off crash costs little
RESTART_CEILING = 30.0  # a crash loop is retried this often at most, never spun
STABLE_SECONDS = 60.0  # a child that ran this long was healthy: its next crash starts afresh


def usable_cores(affinity: int | None, quota: str | None) -> int | None:
    """The cores tocsin's processes may keep busy: those they may run on (``affinity``,
    the scheduler's CPU mask), capped by the CPU quota of the cgroup they run in, rounded
    up (``quota``: cgroup v2's ``cpu.max``, ``"200000 100000"`` for a container given two
    CPUs, ``"max 100000"`` for none; or cgroup v1's ``cfs_quota_us`` and
    ``cfs_period_us`` joined the same way). A container limited to two CPUs on a 64-core
    host sees 64 cores; sized to them, serve would start 63 delivery children taking
    turns on two. ``None`` when nothing is known; an unreadable quota caps nothing.
    Several quotas (a cgroup's and its ancestors', ``quota_files``) cap one after
    another: ``usable_cores(usable_cores(affinity, first), second)``."""
    capped: int | None = None
    if quota is not None:
        fields = quota.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            limit, period = int(fields[0]), int(fields[1])
            if limit > 0 and period > 0:
                capped = -(-limit // period)
    if capped is None:
        return affinity
    return capped if affinity is None else min(affinity, capped)


def quota_files(self_cgroup: str) -> list[tuple[str, ...]]:
    """Where the CPU quotas that cap this process are, relative to where the cgroup
    file systems are mounted (``/sys/fs/cgroup``), given ``/proc/self/cgroup``: its
    cgroup's own and every ancestor's up to the root, each of which caps it. cgroup v2
    (``0::/path``): ``path/cpu.max``; v1's ``cpu`` controller (``N:cpu,cpuacct:/path``):
    ``cpu/path/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``, read together
    (``usable_cores`` takes them joined). A systemd service's ``CPUQuota=`` is its own
    cgroup's ``cpu.max`` (``system.slice/tocsin.service``), which the root's files never
    showed; a container with its own cgroup namespace sees its cgroup as the root
    (``0::/``). The roots' files are always among them, last: where the quota was read
    when nothing else is known (no ``/proc/self/cgroup``, or a path that is not
    there)."""
    found: list[tuple[str, ...]] = []
    for line in self_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3 or not fields[2].startswith("/"):
            continue
        hierarchy, controllers, path = fields
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts), -1, -1):
            here = "".join(f"{part}/" for part in parts[:depth])
            if hierarchy == "0" and not controllers:
                found.append((f"{here}cpu.max",))
            elif "cpu" in controllers.split(","):
                found.append((f"cpu/{here}cpu.cfs_quota_us", f"cpu/{here}cpu.cfs_period_us"))
    for root in (("cpu.max",), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        if root not in found:
            found.append(root)
    return found


def delivery_processes(configured: int | None, cpu_count: int | None) -> int:
    """``[delivery] processes`` when set; else one per spare core: every core but the
    one the main process (router, recorder, clock, API) keeps busy, and none (delivery
    in the main process, as ``0`` asks) on a single core or when the count is unknown,
    where a child would only take turns with the main process."""
    if configured is not None:
        return configured
    if cpu_count is None or cpu_count < 2:
        return 0
    return max(1, cpu_count - 1)


def broker_threads(cpu_count: int | None) -> int:
    """How many threads the embedded ``nats-server`` runs Go code on (its
    ``GOMAXPROCS``): half the cores, at least one. The broker shares the machine with
    ``tocsin serve`` and its delivery children, one per spare core, which keep every
    core busy in a storm; a Go runtime sized to all of them spins looking for work and
    hands each message between threads that cannot all run at once. On two cores, one
    thread cost the broker 10-20% less CPU through W1 and W1 went ~6% faster
    (docs/performance.md, "The broker's threads")."""
    if cpu_count is None or cpu_count < 2:
        return 1
    return cpu_count // 2


def delivered_in_serve(
    max_per_minute: Mapping[str, int | None], children: int, in_serve: bool
) -> list[str]:
    """The receivers ``tocsin serve``'s own process delivers to, given each receiver's
    ``max_per_minute`` (None: not throttled), its delivery children and ``[delivery]
    in_serve``. Without children, every one. With children, the children deliver to
    every receiver, and serve beside them (``in_serve``) to those not throttled: once a
    storm is routed its core would otherwise idle while the children work off the
    backlog, but ``max_per_minute`` caps a receiver's sends per delivery process, and a
    throttled receiver is capped by what it accepts, not by the cores sending to it, so
    serve adding a process would raise its cap behind the operator's back."""
    if not children:
        return list(max_per_minute)
    if not in_serve:
        return []
    return [name for name, limit in max_per_minute.items() if limit is None]


@dataclass(slots=True)
class Restarts:
    """The delay before one child slot's next start, after its process ended.

    Doubling from ``RESTART_FIRST`` up to ``RESTART_CEILING`` (``Backoff``), so a
    child that dies at once every time is started twice a minute, not thousands of
    times; a child that ran ``STABLE_SECONDS`` or more before it died had recovered,
    so its restart waits only the first delay again."""

    _backoff: Backoff = field(default_factory=lambda: Backoff(RESTART_FIRST, RESTART_CEILING))

    def after_exit(self, ran_seconds: float) -> float:
        """The seconds to wait before starting the slot again, having run this long."""
        if ran_seconds >= STABLE_SECONDS:
            self._backoff = Backoff(RESTART_FIRST, RESTART_CEILING)
        return self._backoff.next()
