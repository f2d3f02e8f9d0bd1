"""The metric registry: every number a run summary reports, described once, as data.

A :class:`MetricDef` says what a metric is (name, unit, label set, direction), how the summary
aggregates it (``aggregation``), where it is shown (leaderboard table and column title, headline
flag) and one line for the docs. Scoring rows, run summaries, the CLI and leaderboard columns,
the MLflow metric names and docs/metrics.md are all read from :func:`default_metrics` (the
built-in definitions) plus what plugins add through the ``avnbench_register_metrics`` hook
(:func:`collect_metrics`).

Case metrics (``aggregation`` "mean" or "rate") have one value per case, taken from a column of
the per-case row (``column``, restricted to the cases that ``cases`` names) or computed from the
whole row (``compute(row) -> float``; NaN or None leaves the case out). A plugin metric is always
of that second kind: it is computed from the rows that :func:`avnbench.evaluation.scoring.score_case`
(or the runner, for classifiers) wrote, so it works on a run's ``cases.csv`` as well as on a
fresh run, and needs no image. Other aggregations are computed by
:mod:`avnbench.evaluation.summaries` itself and only described here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from avnbench.errors import PluginError

if TYPE_CHECKING:
    import pandas as pd
    import pluggy

Task = Literal["segmentation", "classification"]
Aggregation = Literal["mean", "rate", "statistic", "test", "count", "cost"]
CaseSelection = Literal["all", "not_both_empty", "both_nonempty", "lesion_free"]
LabelSet = Literal["vital", "necrosis", "head"]

#: Label sets scored per case: name -> label values that make up the mask.
LABEL_SETS: dict[str, tuple[int, ...]] = {"vital": (1,), "necrosis": (2,), "head": (1, 2)}
#: Suffixes of the summary keys a case metric of aggregation "mean" produces besides its name.
MEAN_SUFFIXES = ("_sd", "_median", "_q1", "_q3", "_n")
RATE_SUFFIXES = ("_n",)
INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")
REGISTER_METRICS_HOOK = "avnbench_register_metrics"


class MetricDef(BaseModel):
    """One metric: what it is, how a run summary aggregates it, and where it is shown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*(\{class\}[a-z0-9_]*)?$",
                      description="summary key; '{class}' stands for a classifier's class name")
    doc: str = Field(min_length=1, description="one line for docs/metrics.md")
    aggregation: Aggregation = Field(
        description="mean: mean ± SD, median, quartiles and n over cases; rate: fraction of "
        "cases (0/1 values) and n; statistic: one number over all cases (kappa, r, AUC); "
        "test: a p-value; count: a number of cases; cost: seconds from the runner"
    )
    unit: str = Field("", description="mm, cm³, %, s, … ('' for fractions, kappas, counts)")
    label: LabelSet | None = None
    higher_is_better: bool | None = Field(None, description="None: not a score (counts, p)")
    title: str = Field("", description="leaderboard / CLI column title")
    headline: bool = Field(False, description="a column of the README and `avnbench run` tables")
    table: Literal["segmentation", "grading", "cost"] | None = Field(
        None, description="leaderboard table that shows it (None: csv and MLflow only)"
    )
    board_rank: int | None = Field(
        None, ge=1, description="position among the leaderboard's ranked metrics (1: the primary "
        "ranking; ranked metrics get bootstrap rank intervals and pairwise tests); None: not ranked"
    )
    tasks: tuple[Task, ...] = ("segmentation",)
    interval: bool = Field(False, description="bootstrap 95 % CI (_ci_low/_ci_high)")
    column: str | None = Field(None, description="per-case row column of a case metric")
    cases: CaseSelection = Field(
        "all", description="cases a column metric counts: all, not_both_empty / both_nonempty "
        "(of its label set) or lesion_free (reference necrosis empty)"
    )
    compute: Callable[[Mapping[str, Any]], float | None] | None = Field(
        None, exclude=True, description="per-case value from the whole row (plugin metrics)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MetricDef:
        is_case = self.aggregation in ("mean", "rate")
        if is_case and (self.column is None) == (self.compute is None):
            raise ValueError(f"metric {self.name!r}: a case metric needs a column or compute, not both")
        if not is_case and (self.column is not None or self.compute is not None):
            raise ValueError(f"metric {self.name!r}: only mean/rate metrics have per-case values")
        if self.board_rank is not None and (not is_case or self.higher_is_better is None or self.table is None):
            raise ValueError(f"metric {self.name!r}: a ranked metric needs per-case values, a direction and a table")
        if self.cases in ("not_both_empty", "both_nonempty") and self.label is None:
            raise ValueError(f"metric {self.name!r}: cases={self.cases!r} needs a label set")
        return self

    @property
    def is_case_metric(self) -> bool:
        return self.aggregation in ("mean", "rate")

    def summary_keys(self) -> tuple[str, ...]:
        """Every key a run summary may hold for this metric (name first)."""
        suffixes = {"mean": MEAN_SUFFIXES, "rate": RATE_SUFFIXES}.get(self.aggregation, ())
        if self.interval:
            suffixes = suffixes + INTERVAL_SUFFIXES
        return (self.name,) + tuple(self.name + s for s in suffixes)


class MetricRegistry:
    """An ordered set of metric definitions, unique by name; the order is the column order."""

    def __init__(self, defs: tuple[MetricDef, ...] | list[MetricDef] = ()):
        self._defs: dict[str, MetricDef] = {}
        self.origin: dict[str, str] = {}
        for d in defs:
            self.register(d)

    def register(self, metric: MetricDef, plugin: str = "avnbench") -> None:
        """Add a metric; a name already taken is refused, naming both registrants."""
        if not isinstance(metric, MetricDef):
            raise PluginError(f"plugin {plugin!r} registered {metric!r}, which is not a MetricDef")
        if metric.name in self._defs:
            raise PluginError(
                f"plugin {plugin!r} registers metric {metric.name!r}, which "
                f"{self.origin[metric.name]!r} already defines; choose another name"
            )
        self._defs[metric.name] = metric
        self.origin[metric.name] = plugin

    def copy(self) -> MetricRegistry:
        out = MetricRegistry()
        out._defs, out.origin = dict(self._defs), dict(self.origin)
        return out

    def __iter__(self) -> Iterator[MetricDef]:
        return iter(self._defs.values())

    def __len__(self) -> int:
        return len(self._defs)

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    def __getitem__(self, name: str) -> MetricDef:
        return self._defs[name]

    def get(self, name: str) -> MetricDef | None:
        return self._defs.get(name)

    def for_task(self, task: str) -> list[MetricDef]:
        return [d for d in self if task in d.tasks]

    def case_metrics(self, task: str) -> list[MetricDef]:
        """The task's metrics with one value per case (aggregation mean or rate)."""
        return [d for d in self.for_task(task) if d.is_case_metric]

    def headline(self, task: str | None = None) -> list[MetricDef]:
        """Headline metrics (README and CLI columns), in registry order."""
        return [d for d in self if d.headline and (task is None or task in d.tasks)]

    def table(self, name: str) -> list[MetricDef]:
        """The columns of one leaderboard table ("segmentation", "grading", "cost")."""
        return [d for d in self if d.table == name]

    def ranked(self) -> list[MetricDef]:
        """The leaderboard's ranked metrics, primary first (``board_rank`` order)."""
        return sorted((d for d in self if d.board_rank is not None), key=lambda d: d.board_rank)

    def describe(self, key: str) -> tuple[MetricDef, str] | None:
        """The definition and suffix ("", "_sd", "_ci_low", …) of a summary key, or None."""
        for d in self:
            pattern = re.escape(d.name).replace(re.escape("{class}"), "[A-Za-z0-9]+")
            match = re.fullmatch(f"({pattern})(.*)", key)
            if match and match.group(2) in ("",) + tuple(s[len(d.name):] for s in d.summary_keys()[1:]):
                return d, match.group(2)
        return None


# --------------------------------------------------------------------------------------------
# per-case values


def _states(frame: pd.DataFrame, label: str) -> np.ndarray:
    """The rows' ``empty_<label>`` states; "none" where the rows do not say."""
    column = f"empty_{label}"
    if column not in frame.columns:
        return np.full(len(frame), "none", dtype=object)
    return np.array(["none" if not isinstance(s, str) or not s else s for s in frame[column]], dtype=object)


def lesion_free(frame: pd.DataFrame) -> np.ndarray:
    """Hips whose reference has no necrosis: ``empty_necrosis`` "both"/"ref", else a zero
    ``necrosis_cm3_ref``."""
    if "empty_necrosis" in frame.columns:
        return np.isin(_states(frame, "necrosis"), ("both", "ref"))
    if "necrosis_cm3_ref" in frame.columns:
        import pandas as pd

        return (pd.to_numeric(frame["necrosis_cm3_ref"], errors="coerce") == 0).to_numpy()
    return np.zeros(len(frame), dtype=bool)


def has_values(metric: MetricDef, frame: pd.DataFrame) -> bool:
    """Whether the rows can give this case metric at all (its column is there; computed ones: yes)."""
    return metric.compute is not None or (metric.column is not None and metric.column in frame.columns)


def case_values(metric: MetricDef, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(values, applies) of a case metric over the rows of ``frame``.

    ``values`` is float64, NaN where the case has no value; ``applies`` says which cases the
    metric is defined for (e.g. both masks non-empty), so that a NaN there is a missing value
    and elsewhere a case left out by definition.
    """
    import pandas as pd

    n = len(frame)
    if metric.compute is not None:
        values = np.full(n, np.nan)
        for i, row in enumerate(frame.to_dict(orient="records")):
            try:
                value = metric.compute(row)
            except Exception as e:
                case = row.get("case_id", f"row {i}")
                raise PluginError(
                    f"metric {metric.name!r} failed on case {case}: {type(e).__name__}: {e}"
                ) from e
            if value is not None and isinstance(value, (int, float, np.number)) and math.isfinite(value):
                values[i] = float(value)
        applies = np.ones(n, dtype=bool) if metric.cases == "all" else _selection(metric, frame)
        values[~applies] = np.nan
        # a computed metric says "not defined here" by returning NaN: that is not a missing value
        return values, applies & np.isfinite(values)
    if metric.column not in frame.columns:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    values = pd.to_numeric(frame[metric.column], errors="coerce").to_numpy(dtype=float, copy=True)
    applies = _selection(metric, frame)
    values[~applies] = np.nan
    return values, applies


def _selection(metric: MetricDef, frame: pd.DataFrame) -> np.ndarray:
    if metric.cases == "all":
        return np.ones(len(frame), dtype=bool)
    if metric.cases == "lesion_free":
        return lesion_free(frame)
    states = _states(frame, metric.label)
    if metric.cases == "both_nonempty":
        return states == "none"
    return states != "both"


_BUILTIN: list[MetricRegistry] = []


def default_metrics() -> MetricRegistry:
    """The built-in metrics of :mod:`avnbench.evaluation.builtin_metrics` (a fresh copy: adding
    to it changes nothing else)."""
    if not _BUILTIN:
        from avnbench.evaluation.builtin_metrics import builtin_metrics

        _BUILTIN.append(MetricRegistry(builtin_metrics()))
    return _BUILTIN[0].copy()


def collect_metrics(pm: pluggy.PluginManager | None = None) -> MetricRegistry:
    """The built-in metrics plus every plugin's ``avnbench_register_metrics`` registrations.

    Each plugin's hook is called on its own (so a clash names the plugin that made it). A plugin
    that registers a taken name or a non-MetricDef raises :class:`PluginError`.
    """
    registry = default_metrics()
    if pm is None:
        return registry
    hook = getattr(pm.hook, REGISTER_METRICS_HOOK)
    impls = [i for i in reversed(hook.get_hookimpls()) if not (i.wrapper or i.hookwrapper)]
    plugins = list(dict.fromkeys(i.plugin for i in impls))
    for plugin in plugins:
        name = pm.get_name(plugin) or repr(plugin)
        others = [p for p in plugins if p is not plugin]
        try:
            pm.subset_hook_caller(REGISTER_METRICS_HOOK, remove_plugins=others)(
                register=lambda metric, _name=name: registry.register(metric, _name)
            )
        except PluginError:
            raise
        except Exception as e:
            raise PluginError(
                f"plugin {name!r} failed to register its metrics: {type(e).__name__}: {e}"
            ) from e
    return registry


def markdown_table(registry: MetricRegistry | None = None) -> str:
    """The metrics table of docs/metrics.md (a test checks the docs against it)."""
    registry = registry or default_metrics()
    lines = ["| metric | unit | label set | better | aggregation | CI | shown | description |",
             "|---|---|---|---|---|---|---|---|"]
    for d in registry:
        better = {True: "higher", False: "lower", None: ""}[d.higher_is_better]
        ranked = f"ranked #{d.board_rank}" if d.board_rank else ""
        shown = ", ".join(filter(None, ["headline" if d.headline else "", d.table or "", ranked]))
        lines.append(
            f"| `{d.name}` | {d.unit} | {d.label or ''} | {better} | {d.aggregation} | "
            f"{'yes' if d.interval else ''} | {shown} | {d.doc.replace('|', chr(92) + '|')} |"
        )
    return "\n".join(lines) + "\n"
