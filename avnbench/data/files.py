"""Writing files safely: whole or not at all, with one-line errors, and one writer per target.

Everything avnbench writes next to user data (JSON manifests, splits, score tables) goes through
:func:`write_text_atomic`: the text is written to a temporary name in the same folder and renamed
over the target, so a full disk or a killed process never leaves half a file where a good one
was. :func:`output_folder` refuses an output path below a file or in a folder that cannot be
written, before any work is done. :func:`exclusive_lock` keeps two processes (two
``avnbench data import`` runs with the same ``--out``) from writing the same target at once.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from avnbench.errors import DataError

_DISK_HINT = "the disk may be full or the folder not writable"


def os_reason(error: OSError) -> str:
    """A short reason for an OS error: its strerror ('Permission denied', 'No space left ...')."""
    return error.strerror or type(error).__name__


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden, unique name in ``path``'s folder (same file system, so ``os.replace`` is atomic).

    ``suffix`` is appended, for writers that choose the format from the file name."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{suffix}")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling and ``os.replace``.

    On any failure the temporary file is removed, ``path`` is left as it was, and a one-line
    DataError names the file."""
    path = Path(path)
    partial = temporary_sibling(path)
    try:
        with open(partial, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write ({os_reason(e)}); {_DISK_HINT}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def output_folder(folder: Path, what: str) -> Path:
    """Check that files can be written in ``folder`` (made later if missing): no file on its
    path, and its nearest existing folder writable. Returns ``folder``; raises a one-line
    DataError naming ``what`` (the option, e.g. ``--out``) otherwise. Creates nothing."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise DataError(f"{what} {folder}: {probe} is a file, not a folder; choose an {what} in a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{what} {folder}: {probe} is not writable; choose another {what}")
    return folder


def make_folder(folder: Path, what: str) -> Path:
    """``mkdir -p`` with a one-line DataError (read-only file system, a file in the way)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{what} {folder}: a file is in the way; choose an {what} in a folder") from None
    except OSError as e:
        raise DataError(f"{what} {folder}: cannot create the folder ({os_reason(e)}); {_DISK_HINT}") from None
    return folder


@contextmanager
def exclusive_lock(target: Path) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``.<name>.lock`` beside ``target`` for the block.

    A second holder (another process, or another call in this one) gets a one-line DataError
    naming the pid that holds it. The lock dies with its process, so a killed import never
    leaves a stale lock behind; the lock file is removed on a clean exit."""
    import fcntl

    target = Path(target)
    lock_path = target.with_name(f".{target.name}.lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DataError(f"{target}: cannot create the lock file {lock_path} ({os_reason(e)}); {_DISK_HINT}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataError(
                    f"{target}: another avnbench process (pid {holder}) is writing it; wait for "
                    f"it to finish or choose another --out (lock file {lock_path})"
                ) from None
            raise DataError(f"{lock_path}: cannot lock ({os_reason(e)})") from None
        # The previous holder may have removed the file between our open and our lock: then we
        # hold a lock on a file nobody else can see, so start again on the current one.
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)
