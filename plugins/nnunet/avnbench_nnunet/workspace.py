"""nnU-Net's folders for one avnbench job, and the steps that fill them once and are reused.

Layout (defaults; each of the three roots is the user's own when the matching environment
variable ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` is set)::

    <shared_dir>/nnunet/<fingerprint[:12]>/nnUNet_raw/Dataset9NN_avn<fp8>/     symlinks to the dataset
    <shared_dir>/nnunet/<fingerprint[:12]>/nnUNet_preprocessed/Dataset9NN_avn<fp8>/
    <shared_dir>/nnunet/<fingerprint[:12]>/nnUNet_results/<training key>/Dataset9NN_avn<fp8>/
        nnUNetTrainerAvnbench__nnUNetPlans__<2d|3d_fullres>/fold_<k>/

Raw data, fingerprint, plans and preprocessing depend on the dataset only, so they are made once
per dataset fingerprint and shared by every fold, configuration and preset. Trained models depend
on the preset and the split too, so ``nnUNet_results`` is keyed by both (the training key); that
is what lets ``nnunet-ensemble`` reuse the members ``nnunet-2d`` and ``nnunet-3d`` trained.
Each step runs under a file lock and writes a marker last, so concurrent jobs wait for it and
later jobs reuse it; a step that died half way is redone.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from avnbench.api import FILE_ENDING, ConfigError, load_dataset

from avnbench_nnunet import _jobs

PREPROCESSED_MARKER = "avnbench_preprocessed.json"
CONFIGURATIONS = ("2d", "3d_fullres")
TRAINER_FOLDER = Path(__file__).parent / "nnunet_trainers"
JOB_FILE = "avnbench_job.json"  # read by nnUNetTrainerAvnbench
EPOCHS_FILE = "avnbench_epochs.jsonl"  # appended to by nnUNetTrainerAvnbench, one line per epoch
POLL_SECONDS = 1.0  # how often a running step's new epoch lines are read
CODE_DISTRIBUTIONS = ("avnbench", "avnbench-nnunet", "nnunetv2")  # their versions key trained models


class NnunetStepError(RuntimeError):
    """An nnU-Net step in a child process failed; the message names its log file."""


@contextlib.contextmanager
def file_lock(path: Path):
    """Exclusive advisory lock on ``path`` (created if missing), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dataset_id_for(fingerprint: str) -> int:
    """A dataset id in 900-999 derived from the fingerprint (nnU-Net needs a three-digit id)."""
    return 900 + int(fingerprint[:8], 16) % 100


@dataclass(frozen=True)
class Workspace:
    """nnU-Net's three folders for one dataset and training key, and where logs go."""

    raw: Path
    preprocessed: Path
    results: Path
    base: Path
    dataset_id: int
    dataset_name: str
    fingerprint: str

    @classmethod
    def create(cls, shared_dir: Path, fingerprint: str, training_key: str) -> "Workspace":
        base = Path(shared_dir).resolve() / "nnunet" / fingerprint[:12]
        dataset_id = dataset_id_for(fingerprint)

        def root(var: str, default: Path) -> Path:
            value = os.environ.get(var)
            return Path(value).resolve() if value else default

        results_root = root("nnUNet_results", base / "nnUNet_results")
        return cls(
            raw=root("nnUNet_raw", base / "nnUNet_raw"),
            preprocessed=root("nnUNet_preprocessed", base / "nnUNet_preprocessed"),
            results=results_root / training_key,
            base=base,
            dataset_id=dataset_id,
            dataset_name=f"Dataset{dataset_id:03d}_avn{fingerprint[:8]}",
            fingerprint=fingerprint,
        )

    # --- environment ---------------------------------------------------------------------
    def environment(self, device: str, n_proc_da: int, n_proc_preprocessing: int) -> dict[str, str]:
        """The child process environment: nnU-Net's folders, trainer path and worker counts."""
        env = dict(os.environ)
        env["nnUNet_raw"] = str(self.raw)
        env["nnUNet_preprocessed"] = str(self.preprocessed)
        env["nnUNet_results"] = str(self.results)
        previous = os.environ.get("nnUNet_extTrainer")
        env["nnUNet_extTrainer"] = os.pathsep.join([str(TRAINER_FOLDER)] + ([previous] if previous else []))
        env.setdefault("nnUNet_n_proc_DA", str(n_proc_da))
        env.setdefault("nnUNet_def_n_proc", str(n_proc_preprocessing))
        if device == "cpu":
            env["nnUNet_compile"] = "f"  # torch.compile costs minutes and gains nothing on a CPU
        # Keep caches that libraries would put in $HOME or /tmp inside the work folder.
        cache = self.base / ".cache"
        env.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "torchinductor"))
        env.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run_step(self, step: str, spec: dict[str, Any], env: dict[str, str], log_path: Path,
                 while_running: Callable[[], None] | None = None) -> None:
        """Run one nnU-Net step (see ``_jobs``) in a child process, its output into ``log_path``;
        ``while_running`` is called every second while it runs and once after it ends."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path = log_path.with_suffix(".spec.json")
        spec_path.write_text(json.dumps(spec, indent=2, default=str))
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "avnbench_nnunet._jobs", step, str(spec_path)],
                env=env, cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                while True:
                    try:
                        proc.wait(timeout=POLL_SECONDS if while_running else None)
                        break
                    except subprocess.TimeoutExpired:
                        while_running()
                if while_running:
                    while_running()
            except BaseException:  # interrupted: do not leave nnU-Net training on its own
                proc.kill()
                proc.wait()
                raise
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise NnunetStepError(
                f"nnU-Net step '{step}' failed with exit code {proc.returncode}; full log: {log_path}\n{tail}"
            )

    # --- raw data and preprocessing ------------------------------------------------------
    @property
    def raw_dataset(self) -> Path:
        return self.raw / self.dataset_name

    @property
    def preprocessed_dataset(self) -> Path:
        return self.preprocessed / self.dataset_name

    def is_preprocessed(self) -> bool:
        marker = self.preprocessed_dataset / PREPROCESSED_MARKER
        if not marker.is_file():
            return False
        done = json.loads(marker.read_text())
        return done.get("fingerprint") == self.fingerprint and set(CONFIGURATIONS) <= set(done["configurations"])

    def ensure_preprocessed(self, dataset_dir: Path, splits_file: Path, env: dict[str, str],
                            n_proc: int) -> bool:
        """Raw dataset, fingerprint, plans and preprocessed data, made once; True if made now.

        ``splits_file`` (the benchmark's shared split) becomes nnU-Net's ``splits_final.json``
        so that nnU-Net's fold k is the benchmark's fold k.
        """
        made = False
        with file_lock(self.preprocessed / f".{self.dataset_name}.lock"):
            if not self.is_preprocessed():
                self._write_raw_dataset(Path(dataset_dir))
                if self.preprocessed_dataset.exists():  # a half-finished earlier attempt
                    shutil.rmtree(self.preprocessed_dataset)
                # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which must be >= 1.
                planning_env = {**env, "nnUNet_n_proc_DA": str(max(1, int(env.get("nnUNet_n_proc_DA", "1"))))}
                self.run_step(
                    "preprocess",
                    {"dataset_id": self.dataset_id, "num_processes": n_proc,
                     "configurations": list(CONFIGURATIONS)},
                    planning_env,
                    self.base / "logs" / "preprocess.log",
                )
                marker = {"fingerprint": self.fingerprint, "configurations": list(CONFIGURATIONS),
                          "dataset_dir": str(Path(dataset_dir).resolve())}
                (self.preprocessed_dataset / PREPROCESSED_MARKER).write_text(json.dumps(marker, indent=2))
                made = True
            target = self.preprocessed_dataset / "splits_final.json"
            if not target.exists() or target.read_bytes() != Path(splits_file).read_bytes():
                tmp = target.with_suffix(".tmp")
                shutil.copyfile(splits_file, tmp)
                os.replace(tmp, target)
        return made

    def _write_raw_dataset(self, dataset_dir: Path) -> None:
        """The dataset as an nnU-Net raw dataset: symlinks to its images and labels."""
        dataset = load_dataset(dataset_dir)
        root = self.raw_dataset
        if root.exists():
            shutil.rmtree(root)
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        for case in dataset.cases:
            _link(case.image_path, root / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}")
            _link(case.label_path, root / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
        ds_json = json.loads((dataset.root / "dataset.json").read_text())
        ds_json["numTraining"] = len(dataset.cases)
        (root / "dataset.json").write_text(json.dumps(ds_json, indent=2))

    def ensure_configuration(self, configuration: str, base_features: int | None,
                             patch_size: list[int] | None) -> str:
        """The name of an nnU-Net configuration with these overrides, added to the plans if new.

        Uses nnU-Net's own mechanism for variants (a configuration in ``nnUNetPlans.json`` with
        ``inherits_from``, see nnU-Net's explanation_plans_files.md): the planned topology,
        preprocessing and code path stay; only the width (features per stage, scaled so the
        first stage has ``base_features``) and/or the patch size change. Without overrides, the
        planned configuration itself.
        """
        if base_features is None and patch_size is None:
            return configuration
        name = configuration
        if base_features is not None:
            name += f"_f{base_features}"
        if patch_size is not None:
            name += "_p" + "x".join(str(p) for p in patch_size)
        plans_path = self.preprocessed_dataset / f"{_jobs.PLANS_NAME}.json"
        with file_lock(self.preprocessed / f".{self.dataset_name}.lock"):
            plans = json.loads(plans_path.read_text())
            if name in plans["configurations"]:
                return name
            parent = plans["configurations"][configuration]
            derived: dict[str, Any] = {"inherits_from": configuration}
            arch = copy.deepcopy(parent["architecture"])
            kwargs = arch["arch_kwargs"]
            if base_features is not None:
                scale = base_features / kwargs["features_per_stage"][0]
                kwargs["features_per_stage"] = [max(1, round(f * scale)) for f in kwargs["features_per_stage"]]
                derived["architecture"] = arch
            if patch_size is not None:
                strides = np.prod(np.asarray(kwargs["strides"]), axis=0)
                if len(patch_size) != len(strides) or any(p % s for p, s in zip(patch_size, strides)):
                    raise ConfigError(
                        f"patch_size {patch_size} does not fit nnU-Net's {configuration} plan: it needs "
                        f"{len(strides)} sizes divisible by {strides.tolist()}"
                    )
                derived["patch_size"] = list(patch_size)
            plans["configurations"][name] = derived
            tmp = plans_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(plans, indent=4))
            os.replace(tmp, plans_path)
        return name

    # --- training -----------------------------------------------------------------------
    def member_folder(self, configuration: str, fold: int) -> Path:
        """nnU-Net's output folder of one trained configuration and fold."""
        return (self.results / self.dataset_name
                / f"{_jobs.TRAINER_NAME}__{_jobs.PLANS_NAME}__{configuration}" / f"fold_{fold}")

    def is_trained(self, configuration: str, fold: int, schedule: dict[str, Any]) -> bool:
        """A finished, exported training of this configuration and fold with this schedule."""
        folder = self.member_folder(configuration, fold)
        if not (folder / _jobs.MODEL_FILE).is_file() or not (folder / JOB_FILE).is_file():
            return False
        done = json.loads((folder / JOB_FILE).read_text())
        return all(done.get(k) == v for k, v in schedule.items())

    def ensure_trained(self, configuration: str, fold: int, schedule: dict[str, Any],
                       train_ids: list[str], val_ids: list[str], device: str, seed: int,
                       num_threads: int, env: dict[str, str],
                       on_epoch: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Train one configuration and fold unless a finished one exists; True if trained now.

        ``schedule`` holds the trainer settings ``nnUNetTrainerAvnbench`` reads (epochs,
        iterations, batch size ...); ``train_ids``/``val_ids`` are the training cases and the
        internal validation cases (nnU-Net's per-epoch pseudo Dice), both from the fold's
        training cases. ``on_epoch`` gets each epoch's record (see the trainer) while nnU-Net
        trains.
        """
        folder = self.member_folder(configuration, fold)
        job = {**schedule, "train": list(train_ids), "val": list(val_ids), "seed": seed, "device": device}
        with file_lock(folder.parent / f".fold_{fold}.lock"):
            if self.is_trained(configuration, fold, schedule):
                return False
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            (folder / JOB_FILE).write_text(json.dumps(job, indent=2))
            self.run_step(
                "train",
                {"dataset_name": self.dataset_name, "configuration": configuration, "fold": fold,
                 "device": device, "seed": seed, "num_threads": num_threads},
                env,
                self.base / "logs" / f"train_{self.results.name}_{configuration}_fold{fold}.log",
                while_running=EpochTail(folder / EPOCHS_FILE, on_epoch) if on_epoch else None,
            )
            return True


class EpochTail:
    """Called repeatedly: hands each complete new line of a growing JSON-lines file to
    ``on_record``, once, in order."""

    def __init__(self, path: Path, on_record: Callable[[dict[str, Any]], None]):
        self.path, self.on_record, self.offset = Path(path), on_record, 0

    def __call__(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            if line.strip():
                self.on_record(json.loads(line))


def _link(source: Path, target: Path) -> None:
    try:
        target.symlink_to(Path(source).resolve())
    except OSError:  # file systems without symlinks
        shutil.copyfile(source, target)


def code_versions() -> dict[str, str]:
    """Installed versions of the code that trains a model: avnbench, this plugin, nnU-Net."""
    versions = {}
    for name in CODE_DISTRIBUTIONS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not-installed"
    return versions


def training_key(preset: str, split_hash: str, seed: int, schedule_is_preset: bool,
                 schedule: dict[str, Any], versions: dict[str, str] | None = None) -> str:
    """Name of the ``nnUNet_results`` folder: preset, split and code versions (default: the
    installed ones, :func:`code_versions`), plus seed/overrides if any. Other code trains anew."""
    versions = code_versions() if versions is None else versions
    code = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:8]
    key = f"{preset}-split{split_hash[:12]}-code{code}"
    if seed != 0:
        key += f"-seed{seed}"
    if not schedule_is_preset:
        digest = hashlib.sha256(json.dumps(schedule, sort_keys=True).encode()).hexdigest()[:8]
        key += f"-custom{digest}"
    return key
