"""The work folder: where each job's files go, the images staged for ``predict``, the lock.

``<workdir>/<dataset>/`` holds one folder per job (``<method>/<preset>/fold_<k>``), a folder per
test job (``<method>/<preset>/test-<other dataset>/fold_<k>``: fold k's model on every case of
another dataset), a folder shared by the jobs on that dataset (``_shared``) and ``.lock``, held by
the run using it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from avnbench.data.dataset import FILE_ENDING, Case
from avnbench.errors import ConfigError
from avnbench.jobs import FoldJob
from avnbench.methods import PredictCase

LOCK_FILE = ".lock"
INPUTS_DIR = "inputs"


def job_dir_for(workdir: Path, dataset_name: str, method: str, preset: str, fold: int) -> Path:
    """``<workdir>/<dataset>/<method>/<preset>/fold_<k>``."""
    return Path(workdir) / dataset_name / method / preset / f"fold_{fold}"


def job_dir_for_test(workdir: Path, dataset_name: str, method: str, preset: str, fold: int,
                     test_dataset_name: str) -> Path:
    """``<workdir>/<dataset>/<method>/<preset>/test-<test dataset>/fold_<k>``: beside the fold
    folders, not inside one, so that a method clearing its own fit folder never touches it."""
    return Path(workdir) / dataset_name / method / preset / f"test-{test_dataset_name}" / f"fold_{fold}"


def shared_dir_for(workdir: Path, dataset_name: str) -> Path:
    """Folder shared by all jobs on one dataset within a work folder."""
    return Path(workdir) / dataset_name / "_shared"


def stage_predict_cases(job: FoldJob, cases: Sequence[Case], with_landmarks: bool) -> list[PredictCase]:
    """The sealed cases ``predict`` gets, their images staged in ``job_dir/inputs``.

    Each image is hard-linked (copied where linking fails, e.g. across file systems) to
    ``inputs/<case>_0000.nii.gz``, so no path handed to ``predict`` leads into the dataset
    folder, where the reference labels lie next to the images.
    """
    inputs = job.job_dir / INPUTS_DIR
    inputs.mkdir(parents=True, exist_ok=True)
    sealed = []
    for case in cases:
        staged = inputs / f"{case.case_id}_0000{FILE_ENDING}"
        staged.unlink(missing_ok=True)
        try:
            os.link(case.image_path, staged)
        except OSError:
            shutil.copyfile(case.image_path, staged)
        sealed.append(PredictCase.of(case, with_landmarks=with_landmarks, image_path=staged))
    return sealed


def check_work_folder(workdir: Path) -> None:
    """A ConfigError unless ``workdir`` is a folder or can become one (checked before any work)."""
    workdir = Path(workdir)
    for folder in (workdir, *workdir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"work folder {workdir}: {folder} is a file; pass a folder (--workdir)")
            return


@contextlib.contextmanager
def work_folder_lock(workdir: Path, dataset_name: str) -> Iterator[Path]:
    """Hold ``<workdir>/<dataset>/.lock`` (``fcntl.flock``) while a run uses that folder.

    A second run on the same folder is refused with one line naming the holder (pid, host,
    command). The kernel releases the lock when the holder exits or crashes. A work folder that
    is a file or cannot be written is a :class:`ConfigError`.
    """
    import fcntl

    workdir = Path(workdir)
    folder = workdir / dataset_name
    check_work_folder(workdir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write to work folder {workdir} ({e.strerror}); pass a writable --workdir") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                f"work folder {folder} is in use by {holder}; wait for that run to finish or pass another --workdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})\n")
        handle.flush()
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
