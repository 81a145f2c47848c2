"""One writer per output: an advisory lock file beside it, released when the process ends."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import InputError

try:
    import fcntl
except ImportError:  # Windows: fall back to exclusive creation (a crashed run leaves the file to delete)
    fcntl = None  # type: ignore[assignment]


class OutputLock:
    """`OUT.lock`, held with flock for the whole job. The kernel drops the lock when the process dies,
    so a killed job never leaves a stale lock behind on POSIX systems."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                flags = os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL)
                fd = os.open(self.path, flags, 0o644)
            except FileExistsError as exc:
                raise InputError(f"{self.path} exists: another edgeclip job is writing this output (or one crashed: "
                                 "delete the .lock file if none is running)") from exc
            except OSError as exc:
                raise InputError(f"cannot create {self.path}: {exc.strerror}; choose an --out you can write to") from exc
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise InputError(f"another edgeclip job is writing {self.path.name.removesuffix('.lock')} (it holds "
                                 f"{self.path}); wait for it to finish or choose another --out") from None
            # The holder before us may have deleted the file between our open and our flock: retry on the new one.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # unlink while still holding the lock, so no one locks a file we then delete
        os.close(self._fd)
        self._fd = None
