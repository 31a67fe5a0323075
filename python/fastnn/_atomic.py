"""All-or-nothing file writes: a file that is replaced is either the old one or the
complete new one, never half of either."""
from __future__ import annotations

import contextlib
import os
import secrets


def fsync_dir(folder: str) -> None:
    """Make a rename in `folder` durable (where the platform has directory fds)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """Yield a file object for writing `path` all or nothing.

    The bytes go to a new temporary file beside `path` (created exclusively, with the
    permissions open() would give it); when the block ends normally the file is flushed,
    fsynced and renamed over `path`. On any exception (an error raised by the block, a
    full disk, an interrupt) the temporary file is removed and `path` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(folder)
