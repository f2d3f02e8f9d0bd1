"""Shared cross-validation splits: patient-grouped, grade-stratified, seeded, hashed.

Written as nnU-Net's ``splits_final.json`` (a list of ``{"train": [...], "val": [...]}``) so that
nnU-Net's fold k is the benchmark's fold k, plus ``splits.meta.json`` with how it was made and the
sha256 of the split that every run records.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel

from avnbench.data.dataset import SPLITS_FILE, SPLITS_META_FILE, Case, Dataset, read_json_model
from avnbench.data.files import write_text_atomic
from avnbench.errors import ConfigError, DataError


class Fold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[str]
    val: list[str]


class SplitsFile(RootModel[list[Fold]]):
    """``splits_final.json``: nnU-Net's list of folds."""


class SplitsMeta(BaseModel):
    """``splits.meta.json``: how the split was made and its hash."""

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(ge=1)
    seed: int
    grouping: str = "patient_id"
    stratification: str | None
    sha256: str
    dataset: str


def split_hash(folds: Sequence[Fold]) -> str:
    """sha256 (hex) of the split's canonical JSON: sorted ids per fold, folds in order."""
    canon = [{"train": sorted(f.train), "val": sorted(f.val)} for f in folds]
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()


def make_splits(cases: Sequence[Case], n_folds: int = 5, seed: int = 0) -> tuple[list[Fold], str | None]:
    """Patient-grouped k folds, stratified by Steinberg grade where grades exist.

    Returns the folds and the name of the stratification variable (None if none was possible).
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    if n_folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {n_folds}")
    patients = sorted({c.patient_id for c in cases})
    if n_folds > len(patients):
        raise ConfigError(
            f"--folds {n_folds} is more than the {len(patients)} patients in the dataset; "
            f"use at most {len(patients)}"
        )
    ids = np.array([c.case_id for c in cases])
    groups = np.array([c.patient_id for c in cases])
    strata = np.array([c.meta.steinberg or "none" for c in cases])
    _, counts = np.unique(strata, return_counts=True)
    # scikit-learn needs at least one grade with as many cases as folds to stratify at all
    stratify = len(counts) > 1 and counts.max() >= n_folds
    if stratify:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # a rare grade with fewer cases than folds is expected
            warnings.simplefilter("ignore", UserWarning)
            parts = list(splitter.split(ids, strata, groups))
    else:
        # GroupKFold has no shuffle before scikit-learn 1.6; shuffle the patients ourselves.
        rng = np.random.default_rng(seed)
        order = {p: i for i, p in enumerate(rng.permutation(patients))}
        parts = GroupKFold(n_splits=n_folds).split(ids, groups=[order[g] for g in groups])
    folds = [Fold(train=sorted(ids[tr].tolist()), val=sorted(ids[va].tolist())) for tr, va in parts]
    return folds, ("steinberg" if stratify else None)


def validate_split(dataset: Dataset, folds: Sequence[Fold]) -> None:
    """Refuse a split the benchmark cannot use, with one line naming ``splits_final.json``: a
    case not in the dataset, a case not in exactly one validation fold, or a patient (or case)
    in both train and val of one fold."""
    source = dataset.root / SPLITS_FILE
    redo = f"regenerate it with 'avnbench data split {dataset.root} --force'"
    if not folds:
        raise DataError(f"{source}: no folds; {redo}")
    pid = {c.case_id: c.patient_id for c in dataset.cases}
    unknown = sorted({c for f in folds for c in f.train + f.val} - set(pid))
    if unknown:
        raise DataError(f"{source}: names cases not in the dataset: {', '.join(unknown[:5])}; {redo}")
    val_count = Counter(c for f in folds for c in f.val)
    missing = [c for c in pid if c not in val_count]
    if missing:
        raise DataError(f"{source}: case(s) in no validation fold: {', '.join(missing[:5])}; {redo}")
    twice = sorted(c for c, n in val_count.items() if n > 1)
    if twice:
        raise DataError(f"{source}: case(s) in several validation folds: {', '.join(twice[:5])}; {redo}")
    for k, f in enumerate(folds):
        shared = sorted({pid[c] for c in f.train} & {pid[c] for c in f.val})
        if shared:
            both = sorted(set(f.train) & set(f.val))
            cases = f" (case(s) {', '.join(both[:5])} in both)" if both else ""
            raise DataError(f"{source}: fold {k} leaks patient(s) {', '.join(shared[:5])} between train and val{cases}; {redo}")

def write_splits(dataset: Dataset, n_folds: int = 5, seed: int = 0, force: bool = False) -> SplitsMeta:
    """Make the dataset's split and write ``splits_final.json`` and ``splits.meta.json``."""
    path = dataset.root / SPLITS_FILE
    if path.exists() and not force:
        existing = read_splits(dataset)
        if len(existing[0]) == n_folds and existing[1].seed == seed:
            return existing[1]
        raise ConfigError(
            f"{path} exists with {len(existing[0])} folds and seed {existing[1].seed}; "
            "pass --force to replace it (runs made on the old split keep its hash)"
        )
    folds, strat = make_splits(dataset.cases, n_folds, seed)
    meta = SplitsMeta(
        folds=n_folds, seed=seed, stratification=strat, sha256=split_hash(folds), dataset=dataset.name
    )
    validate_split(dataset, folds)
    # Split first, meta second: should the meta write fail, read_splits sees a hash mismatch
    # and reports the split as hand-made (seed -1), never a wrong seed for it.
    write_text_atomic(path, json.dumps([f.model_dump() for f in folds], indent=2) + "\n")
    write_text_atomic(dataset.root / SPLITS_META_FILE, meta.model_dump_json(indent=2) + "\n")
    return meta


def read_splits(dataset: Dataset) -> tuple[list[Fold], SplitsMeta]:
    """Read and check the dataset's split; the hash is recomputed, not trusted."""
    path = dataset.root / SPLITS_FILE
    if not path.exists():
        raise DataError(f"{path}: no split; make one with 'avnbench data split {dataset.root}'")
    redo = f"regenerate it with 'avnbench data split {dataset.root} --force'"
    folds = read_json_model(path, SplitsFile, hint=redo).root
    validate_split(dataset, folds)
    meta_path = dataset.root / SPLITS_META_FILE
    digest = split_hash(folds)
    if meta_path.exists():
        meta = read_json_model(meta_path, SplitsMeta, hint=redo)
        if meta.sha256 != digest:
            meta = meta.model_copy(update={"sha256": digest, "seed": -1})
    else:  # a hand-made split (nnU-Net users edit splits_final.json by hand)
        meta = SplitsMeta(folds=len(folds), seed=-1, stratification=None, sha256=digest, dataset=dataset.name)
    return folds, meta


def ensure_splits(dataset: Dataset, n_folds: int = 5, seed: int = 0) -> tuple[list[Fold], SplitsMeta]:
    """The dataset's split, made with ``n_folds`` and ``seed`` if it has none yet."""
    if not dataset.splits_path.exists():
        write_splits(dataset, n_folds, seed)
    return read_splits(dataset)


def carve_validation(cases: Sequence[Case], fraction: float = 0.2, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Split a fold's training cases into (train, internal validation) by patient.

    The internal validation set is for model selection only; it never contains a case of the
    fold's own validation set because it is drawn from ``cases`` alone.
    """
    patients = sorted({c.patient_id for c in cases})
    if len(patients) < 2:
        return list(cases), []
    rng = np.random.default_rng(seed)
    n_val = min(len(patients) - 1, max(1, round(fraction * len(patients))))
    val_patients = set(rng.permutation(patients)[:n_val].tolist())
    train = [c for c in cases if c.patient_id not in val_patients]
    val = [c for c in cases if c.patient_id in val_patients]
    return train, val
