"""Fail-points for crash tests: ``TOCSIN_FAULT=<point>[:<n>]`` makes the process SIGKILL
itself the n-th time (default 1st) it passes ``point``. Unset, each check is one dict
lookup. The points are the moments the invariants care about (DESIGN.md section 2):

- ``router.before_commit``  facts decided, not yet committed
- ``router.after_commit``   committed, nothing published yet
- ``router.after_publish``  work items stored, inbound not acked
- ``recorder.before_commit``, ``recorder.after_commit``, ``recorder.after_publish``: the
  same moments of the recorder (both run the processor shell, ``processor``)
- ``control.after_commit`` an operator command committed, its work items not published
- ``delivery.after_send``   the receiver has it, no outcome published
- ``delivery.after_outcome`` outcome stored, work item not acked
- ``partition.after_forward`` a batch forwarded to its partitions, TOCSIN_IN not acked
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("TOCSIN_FAULT", "")
_point, _, _nth = _spec.partition(":")
_remaining = {_point: int(_nth or "1")} if _point else {}


def point(name: str) -> None:
    """Die here, like a power cut, if the environment asks for it."""
    if name in _remaining:
        _remaining[name] -= 1
        if _remaining[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
