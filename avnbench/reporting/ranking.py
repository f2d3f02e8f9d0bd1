"""Ranking with its uncertainty, from per-case tables (challengeR / Medical Segmentation Decathlon).

Aggregate-then-rank: a method's score is its mean over the cases; rank 1 is the best mean (ties
share the better rank). The rank's uncertainty comes from a patient bootstrap: every resample
draws patients with replacement and takes all hips of a drawn patient together (hips of one
patient are not independent), the same draw for every method, so the resamples stay paired.

Pairwise significance: for every ordered pair of methods a one-sided Wilcoxon signed-rank test
("row is better than column") on per-patient means over the hips both scored, Holm-corrected over
all pairs at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from avnbench.evaluation.bootstrap import nanmean_rows, resample_indices

CI_LEVEL = 0.95


@dataclass(frozen=True)
class CaseValues:
    """One metric's per-case values of several methods on a common set of hips.

    ``values`` is (n_cases, n_methods), NaN where a method's metric is undefined for a hip (e.g.
    Dice when both masks are empty); ``patients`` names the patient of every row.
    """

    methods: list[str]
    case_ids: list[str]
    patients: np.ndarray
    values: np.ndarray
    higher_is_better: bool

    @property
    def n_cases(self) -> int:
        return len(self.case_ids)

    @property
    def n_patients(self) -> int:
        return len(set(self.patients.tolist()))

    def defined(self, method: str) -> tuple[int, int]:
        """(hips, patients) with a finite value for ``method``."""
        column = self.values[:, self.methods.index(method)]
        ok = np.isfinite(column)
        return int(ok.sum()), len(set(self.patients[ok].tolist()))


def case_values(tables: Mapping[str, pd.DataFrame], column: str, higher_is_better: bool) -> CaseValues:
    """Align ``column`` of every method's per-case table on the hips all tables have.

    Each table needs ``case_id``; ``patient_id`` (missing: each hip is its own patient) is taken
    from the first table that has it. A table without ``column`` gives NaN for every hip.
    """
    methods = list(tables)
    indexed = {m: t.drop_duplicates("case_id").set_index(t["case_id"].astype(str).to_numpy()) for m, t in tables.items()}
    common = sorted(set.intersection(*(set(t.index) for t in indexed.values()))) if indexed else []
    patients = np.asarray(common, dtype=object)
    for table in indexed.values():
        if "patient_id" in table.columns:
            patients = table.loc[common, "patient_id"].astype(str).to_numpy(dtype=object)
            break
    values = np.full((len(common), len(methods)), np.nan)
    for j, method in enumerate(methods):
        table = indexed[method]
        if column in table.columns:
            values[:, j] = pd.to_numeric(table.loc[common, column], errors="coerce").to_numpy(dtype=float)
    return CaseValues(methods, common, patients, values, higher_is_better)


def ranks_of(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks (1 = best) of the last axis; ties share the better rank; NaN ranks last."""
    score = np.where(np.isfinite(means), means if higher_is_better else -means, -np.inf)
    # rank = 1 + number of methods strictly better ("min" ties, as challengeR's default)
    return 1 + (score[..., None, :] > score[..., :, None]).sum(axis=-1)


def patient_resamples(patients: np.ndarray, n_bootstrap: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_bootstrap`` patient-bootstrap resamples (all hips of a drawn patient)."""
    names, codes = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    rows_of = [np.flatnonzero(codes == k) for k in range(len(names))]
    draws = resample_indices(len(names), n_bootstrap, seed)  # the draws the run summaries use
    return [np.concatenate([rows_of[k] for k in draw]) if len(draw) else np.zeros(0, int) for draw in draws]


@dataclass
class Ranking:
    """Point ranks, bootstrap rank distribution and mean intervals of one metric."""

    metric: str
    methods: list[str]
    higher_is_better: bool
    n_cases: int
    n_patients: int
    n_bootstrap: int
    means: np.ndarray
    ranks: np.ndarray
    rank_samples: np.ndarray = field(repr=False)  # (n_bootstrap, n_methods)
    mean_samples: np.ndarray = field(repr=False)

    def rank_interval(self, method: str) -> tuple[int, int]:
        """The rank's 95 % bootstrap interval (percentiles of the resampled ranks)."""
        samples = self.rank_samples[:, self.methods.index(method)]
        lo, hi = np.quantile(samples, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2], method="inverted_cdf")
        return int(lo), int(hi)

    def mean_interval(self, method: str) -> tuple[float, float] | None:
        """Patient-bootstrap 95 % interval of the mean, None where undefined."""
        samples = self.mean_samples[:, self.methods.index(method)]
        samples = samples[np.isfinite(samples)]
        if len(samples) < max(2, self.n_bootstrap // 2):
            return None
        lo, hi = np.quantile(samples, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
        return float(lo), float(hi)

    def rank_frequencies(self) -> np.ndarray:
        """(n_methods, n_methods): fraction of resamples in which method i got rank r+1."""
        k = len(self.methods)
        freq = np.zeros((k, k))
        for j in range(k):
            counts = np.bincount(self.rank_samples[:, j] - 1, minlength=k)[:k]
            freq[j] = counts / max(len(self.rank_samples), 1)
        return freq


def rank_with_bootstrap(data: CaseValues, metric: str, n_bootstrap: int = 1000, seed: int = 0) -> Ranking:
    """Rank the methods of ``data`` by their mean, with the patient-bootstrap rank distribution."""
    means = nanmean_rows(data.values.T)
    resamples = patient_resamples(data.patients, n_bootstrap, seed)
    mean_samples = np.array([nanmean_rows(data.values[rows].T) for rows in resamples]).reshape(n_bootstrap, len(data.methods))
    return Ranking(
        metric=metric, methods=list(data.methods), higher_is_better=data.higher_is_better,
        n_cases=data.n_cases, n_patients=data.n_patients, n_bootstrap=n_bootstrap,
        means=means, ranks=ranks_of(means, data.higher_is_better),
        rank_samples=ranks_of(mean_samples, data.higher_is_better), mean_samples=mean_samples,
    )


@dataclass
class PairwiseTests:
    """One-sided per-patient Wilcoxon tests over all ordered pairs, Holm-corrected together.

    ``p_holm[i, j]`` tests "method i is better than method j" (NaN: not testable); ``n_patients``
    counts the patients with a value for both.
    """

    metric: str
    methods: list[str]
    p_value: np.ndarray
    p_holm: np.ndarray
    n_patients: np.ndarray
    alpha: float = 0.05

    def better_than(self, method: str) -> list[str]:
        """The methods ``method`` is significantly better than."""
        i = self.methods.index(method)
        return [m for j, m in enumerate(self.methods) if j != i and self.p_holm[i, j] < self.alpha]


def per_patient_means(values: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Mean of each column per patient, over the rows where every column is finite."""
    ok = np.all(np.isfinite(values), axis=1)
    if not ok.any():
        return np.zeros((0, values.shape[1]))
    frame = pd.DataFrame(values[ok]).assign(patient=np.asarray(patients)[ok])
    return frame.groupby("patient", sort=True).mean().to_numpy(dtype=float)


def pairwise_wilcoxon(data: CaseValues, metric: str, alpha: float = 0.05) -> PairwiseTests:
    """All ordered pairs: one-sided Wilcoxon signed-rank on per-patient means, Holm over all pairs."""
    from scipy.stats import wilcoxon

    from avnbench.evaluation.comparison import holm
    from avnbench.evaluation.summaries import quietly

    k = len(data.methods)
    p = np.full((k, k), np.nan)
    n = np.zeros((k, k), dtype=int)
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            pair = per_patient_means(data.values[:, [i, j]], data.patients)
            n[i, j] = len(pair)
            if not len(pair):
                continue
            diff = pair[:, 0] - pair[:, 1]
            if not data.higher_is_better:
                diff = -diff
            if np.all(diff == 0):
                p[i, j] = 1.0  # identical on every patient: no evidence either way
                continue
            test = quietly(wilcoxon, diff, alternative="greater")
            if test is not None and np.isfinite(test.pvalue):
                p[i, j] = float(test.pvalue)
    tested = np.isfinite(p)
    adjusted = np.full((k, k), np.nan)
    if tested.any():
        adjusted[tested] = holm(p[tested].tolist())
    return PairwiseTests(metric, list(data.methods), p, adjusted, n, alpha)


def quartiles(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(Q1, median, Q3) of the finite values (linear interpolation), None when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return float(q1), float(med), float(q3)
