"""Writing files so that a reader never sees half of one, and naming files by their content.

Every file projcomp writes for others to read (checkpoints, training states, specs, stats, dataset
zips and shards) goes through `AtomicFile` (or `atomic_write_bytes` / `atomic_write_json` over it):
write a temporary file beside the target, fsync, then `os.replace` -- an atomic rename on POSIX and
Windows. A crash leaves the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Optional

__all__ = ["AtomicFile", "atomic_write_bytes", "atomic_write_json", "file_sha256"]


class AtomicFile:
    """A binary file `.file` written under a temporary name beside `path`; `commit()` fsyncs it and
    renames it to `path`, `abort()` removes it. As a context manager: commit on success, abort on
    an exception. `tmp` fixes the temporary name (a dataset zip is `F.tmp`, so that readers can
    tell an unfinished file); by default it is a fresh unique name."""

    def __init__(self, path: str, tmp: Optional[str] = None):
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        if tmp is None:
            fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
            os.chmod(self.tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
            self.file = os.fdopen(fd, "wb")
        else:
            self.tmp = os.fspath(tmp)
            self.file = open(self.tmp, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write_bytes(path: str, data: bytes) -> None:
    with AtomicFile(path) as f:
        f.file.write(data)


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (how configs identify a dataset without a machine path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)
