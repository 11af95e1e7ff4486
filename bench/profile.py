"""``--profile DIR``: py-spy samples ``tocsin serve`` during W1; a summary says where
its CPU went.

py-spy attaches from outside (no change to how tocsin runs) and ``--nonblocking`` does
not pause the process to read its stacks, so the figures move little; they are still
marked as profiled in the results. The raw collapsed stacks are kept (speedscope and
flamegraph.pl read them) next to a text summary: the functions with the most samples on
top of the stack (self), the most samples anywhere in the stack (inclusive), and self
samples by package.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

from bench.procs import BenchError, Child, venv_binary

RATE = 100  # samples per second
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


class Profiler:
    """``py-spy record`` of one process, stopped with SIGINT so it writes its file."""

    def __init__(self, out: Path, name: str) -> None:
        self.out = out
        self.raw = out / f"{name}.collapsed.txt"
        self.summary = out / f"{name}.top.txt"
        self._child: Child | None = None

    def start(self, pid: int) -> None:
        binary = venv_binary("py-spy")
        if binary is None:
            raise BenchError("--profile needs py-spy: pip install py-spy (make bench installs it)")
        self.out.mkdir(parents=True, exist_ok=True)
        argv = [binary, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw",
                "--nonblocking", "-o", str(self.raw)]  # fmt: skip
        self._child = Child("py-spy", argv, self.out / "py-spy.log").start()

    def stop(self) -> str:
        """Stop sampling; the summary text (also written to ``self.summary``)."""
        if self._child is None:
            return ""
        self._child.stop(timeout=30, sig=signal.SIGINT)
        self._child = None
        if not self.raw.exists():
            return f"py-spy wrote no profile; see {self.out / 'py-spy.log'}"
        text = summarize(self.raw.read_text())
        self.summary.write_text(text)
        return text


def _frame(frame: str) -> tuple[str, str]:
    """``function (path:line)`` -> (function, path)."""
    match = _FRAME.match(frame)
    return (match["function"], match["file"]) if match else (frame, "")


def package_of(path: str) -> str:
    """The package a file belongs to: ``tocsin.router``, ``nats``, ``asyncio``...
    (py-spy prints paths relative to their ``sys.path`` entry when it can)."""
    parts = Path(path).parts
    if "tocsin" in parts:
        i = len(parts) - 1 - parts[::-1].index("tocsin")
        return ".".join(["tocsin", *parts[i + 1 :]]).removesuffix(".py")
    for i, part in enumerate(parts[:-1]):
        if part == "site-packages" or part.startswith("python3"):
            return parts[i + 1].removesuffix(".py")
    if parts and not Path(path).is_absolute():
        return parts[0].removesuffix(".py")
    return path or "?"


def summarize(collapsed: str, top: int = 25) -> str:
    """The top functions by self and inclusive samples, and self samples by package."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        names = [f"{function} ({package_of(path)})" for function, path in frames]
        self_samples[names[-1]] += count
        packages[package_of(frames[-1][1])] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return "no samples\n"

    def table(title: str, counter: Counter[str]) -> list[str]:
        rows = [f"{title} (% of {total:,} samples at {RATE}/s, idle excluded)"]
        rows += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
        return [*rows, ""]

    ours = Counter({name: n for name, n in inclusive.items() if "(tocsin." in name})
    lines = table("self: on top of the stack", self_samples)
    lines += table("self, by package", packages)
    lines += table("inclusive, tocsin's own functions", ours)
    lines += table("inclusive: anywhere in the stack", inclusive)
    return "\n".join(lines)
