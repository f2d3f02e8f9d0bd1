"""Per-case rows as a DataFrame, and the patients they belong to.

Shared by the summaries, the volume statistics and the run comparison: reading columns of rows
that may come from :func:`avnbench.evaluation.scoring.score_case` (dicts) or back from a
``cases.csv`` (where None became NaN), and grouping hips by ``patient_id``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from avnbench.evaluation.bootstrap import patient_codes

Rows = list[dict[str, Any]] | pd.DataFrame


def as_frame(rows: Rows) -> pd.DataFrame:
    """Rows (dicts or a DataFrame) as a fresh DataFrame with a 0..n-1 index."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return frame.reset_index(drop=True)


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 (missing → NaN); all NaN when the column is absent."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, copy=True)


def strings(frame: pd.DataFrame, column: str) -> list[str | None]:
    """A column of labels with None for missing (None, NaN, empty)."""
    if column not in frame.columns:
        return [None] * len(frame)
    out: list[str | None] = []
    for value in frame[column].tolist():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            out.append(None)
        else:
            out.append(str(value))
    return out


def case_ids(frame: pd.DataFrame) -> list[str]:
    """The rows' case ids, or "row <i>" without a case_id column."""
    if "case_id" in frame.columns:
        return [str(c) for c in frame["case_id"]]
    return [f"row {i}" for i in range(len(frame))]


def sample_sd(values: np.ndarray) -> float:
    """Sample standard deviation (ddof 1); NaN below two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")


def quietly(fn, *args, **kwargs):
    """Call a statistics function, turning its 'undefined' warnings into a NaN result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except ValueError:
            return None


@dataclass(frozen=True)
class Patients:
    """The patient of each row: ``codes`` 0..n_patients-1 (first appearance order).

    Rows without ``patient_id`` count as one patient each (``known`` is False then).
    """

    codes: np.ndarray
    n_patients: int
    known: bool

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Patients:
        known = "patient_id" in frame.columns
        ids = frame["patient_id"].tolist() if known else [None] * len(frame)
        codes, n = patient_codes(ids)
        return cls(codes, n, known)

    def bilateral(self) -> int:
        """Patients with two or more hips."""
        return int((np.bincount(self.codes, minlength=self.n_patients) > 1).sum())

    def subset(self, mask: np.ndarray) -> Patients:
        """The patients of the rows where ``mask`` is True, recoded 0..k-1."""
        codes, n = patient_codes(self.codes[mask].tolist())
        return Patients(codes, n, self.known)

    def note(self) -> str:
        """How the statistics treat the grouping, for the summary's notes."""
        n_cases = len(self.codes)
        if not self.known:
            return (f"patient level: the rows have no patient_id, so each of the {n_cases} "
                    "case(s) counts as its own patient")
        return (
            f"patient level: {n_cases} hip(s) of {self.n_patients} patient(s), "
            f"{self.bilateral()} bilateral; bootstrap intervals resample patients (all hips of "
            "a patient together) and the paired t-test, Pearson r and Mann–Whitney U use "
            "per-patient means, because hips of one patient are not independent"
        )
