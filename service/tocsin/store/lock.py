"""The writer's lock: one process at a time may append to a log file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class WriterLock:
    """An exclusive lock on ``<data-dir>/tocsin.lock``: one writer per log. Held by the
    running router for its lifetime, and by ``tocsin compact``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "tocsin.lock"
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
