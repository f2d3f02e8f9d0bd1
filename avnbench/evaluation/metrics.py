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
            except Exception as e:  # noqa: BLE001 - a plugin's bug, named in one line
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


def _abs_error(quantity: str) -> Callable[[Mapping[str, Any]], float]:
    def error(row: Mapping[str, Any]) -> float:
        try:
            return abs(float(row[f"{quantity}_pred"]) - float(row[f"{quantity}_ref"]))
        except (KeyError, TypeError, ValueError):
            return float("nan")

    error.__doc__ = f"|{quantity}_pred − {quantity}_ref| of one case"
    return error


def _any_false_positive(row: Mapping[str, Any]) -> float:
    try:
        return float(float(row["necrosis_cm3_pred"]) > 0)
    except (KeyError, TypeError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------------------------
# the built-in metrics


def _label_metrics() -> list[MetricDef]:
    out: list[MetricDef] = []
    shown = {"dice": {"vital", "necrosis", "head"}, "assd": {"vital", "necrosis"},
             "hd95": {"vital", "necrosis"}, "nsd1mm": {"vital", "necrosis"}}
    headline = {"dice": {"vital", "necrosis", "head"}, "assd": {"vital", "necrosis"},
                "hd95": {"necrosis"}, "nsd1mm": set()}
    for kind, title, unit, higher, cases, doc in (
        ("dice", "Dice", "", True, "not_both_empty",
         "Dice 2|P∩R|/(|P|+|R|); 0 when one mask is empty"),
        ("assd", "ASSD", "mm", False, "both_nonempty",
         "average symmetric surface distance, over cases with both masks non-empty"),
        ("hd95", "HD95", "mm", False, "both_nonempty",
         "max of the two directed 95th-percentile distances, over cases with both masks non-empty"),
        ("nsd1mm", "NSD@1mm", "", True, "not_both_empty",
         "fraction of both borders within 1 mm of the other; 0 when one mask is empty"),
    ):
        for label in LABEL_SETS:
            name = f"{kind}_{label}_mm" if unit == "mm" else f"{kind}_{label}"
            column_title = f"{title} {label}" + (" (mm)" if unit else "")
            out.append(MetricDef(
                name=name, doc=f"{doc} ({label})", aggregation="mean", unit=unit, label=label,
                higher_is_better=higher, title=column_title, headline=label in headline[kind],
                table="segmentation" if label in shown[kind] else None, interval=True,
                column=name, cases=cases,
            ))
    for kind in ("assd", "hd95"):
        for label in LABEL_SETS:
            column = f"{kind}_{label}_mm"
            out.append(MetricDef(
                name=f"{column}_penalized", aggregation="mean", unit="mm", label=label,
                doc=f"{kind.upper()} ({label}) with the one-empty penalty: a case with one mask "
                "empty counts as the image diagonal",
                higher_is_better=False, title=f"{kind.upper()} {label} incl. penalty (mm)",
                interval=True, column=column, cases="not_both_empty",
            ))
    for label in LABEL_SETS:
        for state, doc in (("both", "both masks empty (left out of Dice and distances)"),
                           ("one", "exactly one mask empty"), ("pred", "only the prediction empty"),
                           ("ref", "only the reference empty")):
            out.append(MetricDef(
                name=f"n_empty_{state}_{label}", aggregation="count", unit="cases", label=label,
                doc=f"cases with {doc} ({label})",
                title=f"n one empty {label}" if state == "one" else "",
                table="segmentation" if (state, label) == ("one", "necrosis") else None,
            ))
    return out


def _volume_metrics() -> list[MetricDef]:
    out = [
        MetricDef(name="necrosis_fp_cm3", aggregation="mean", unit="cm³", label="necrosis",
                  higher_is_better=False, title="false-pos. necrosis (cm³)", headline=True,
                  table="segmentation", interval=True, column="necrosis_cm3_pred",
                  cases="lesion_free",
                  doc="predicted necrosis volume on lesion-free hips (reference necrosis empty)"),
        MetricDef(name="necrosis_fp_rate", aggregation="rate", label="necrosis",
                  higher_is_better=False, title="false-pos. necrosis rate", interval=True,
                  compute=_any_false_positive, cases="lesion_free",
                  doc="fraction of lesion-free hips with any predicted necrosis"),
        MetricDef(name="necrosis_cm3_mae", aggregation="mean", unit="cm³", label="necrosis",
                  higher_is_better=False, title="necrosis MAE (cm³)", headline=True,
                  table="segmentation", interval=True, compute=_abs_error("necrosis_cm3"),
                  doc="mean absolute error of the necrosis volume, |pred − ref|"),
        MetricDef(name="necrosis_relvol_mae", aggregation="mean", unit="%", label="necrosis",
                  higher_is_better=False, title="rel. necrosis MAE (%)", interval=True,
                  compute=_abs_error("necrosis_relvol"),
                  doc="mean absolute error of the necrosis volume in % of the head"),
        MetricDef(name="head_cm3_mae", aggregation="mean", unit="cm³", label="head",
                  higher_is_better=False, title="head MAE (cm³)", compute=_abs_error("head_cm3"),
                  doc="mean absolute error of the femoral-head volume"),
    ]
    for q, unit, what in (("necrosis_cm3", "cm³", "necrosis volume"),
                          ("necrosis_relvol", "%", "necrosis volume in % of the head")):
        out += [
            MetricDef(name=f"{q}_ref", aggregation="statistic", unit=unit, label="necrosis",
                      doc=f"mean reference {what} over hips (+ _sd)"),
            MetricDef(name=f"{q}_ref_sd", aggregation="statistic", unit=unit, label="necrosis",
                      doc=f"SD of the reference {what} over hips"),
            MetricDef(name=f"{q}_pred", aggregation="statistic", unit=unit, label="necrosis",
                      doc=f"mean predicted {what} over hips"),
            MetricDef(name=f"{q}_pred_sd", aggregation="statistic", unit=unit, label="necrosis",
                      doc=f"SD of the predicted {what} over hips"),
            MetricDef(name=f"{q}_pearson_r", aggregation="statistic", label="necrosis",
                      higher_is_better=True, interval=q == "necrosis_relvol",
                      title="rel. volume r" if q == "necrosis_relvol" else "volume r",
                      table="segmentation" if q == "necrosis_relvol" else None,
                      doc=f"Pearson r of reference vs predicted {what}, on per-patient means"),
            MetricDef(name=f"{q}_pearson_p", aggregation="test", label="necrosis",
                      doc="p-value of that Pearson r (per-patient means)"),
            MetricDef(name=f"{q}_pearson_r_hips", aggregation="statistic", label="necrosis",
                      higher_is_better=True,
                      title="rel. volume r (hips)" if q == "necrosis_relvol" else "volume r (hips)",
                      doc=f"Pearson r of the {what} over hips (descriptive; the figure's r)"),
            MetricDef(name=f"{q}_ttest_p", aggregation="test", label="necrosis",
                      doc=f"paired t-test predicted vs reference {what}, on per-patient means"),
            MetricDef(name=f"{q}_bland_altman_bias", aggregation="statistic", unit=unit,
                      label="necrosis", doc=f"mean(pred − ref) of the {what} over hips"),
            MetricDef(name=f"{q}_bland_altman_loa_low", aggregation="statistic", unit=unit,
                      label="necrosis", doc="bias − 1.96 SD of the hip differences"),
            MetricDef(name=f"{q}_bland_altman_loa_high", aggregation="statistic", unit=unit,
                      label="necrosis", doc="bias + 1.96 SD of the hip differences"),
        ]
    for side in ("ref", "pred"):
        for group, stages in (("early", "ARCO I/II"), ("advanced", "ARCO IIIA/IIIB/IV")):
            out += [
                MetricDef(name=f"necrosis_relvol_{group}_{side}", aggregation="statistic",
                          unit="%", label="necrosis",
                          doc=f"mean {side} relative necrosis volume of {stages} hips"),
                MetricDef(name=f"necrosis_relvol_{group}_{side}_sd", aggregation="statistic",
                          unit="%", label="necrosis",
                          doc=f"SD of the {side} relative necrosis volume of {stages} hips"),
            ]
        out.append(MetricDef(
            name=f"necrosis_relvol_early_vs_advanced_p_{side}", aggregation="test",
            label="necrosis", doc=f"Mann–Whitney U, early vs advanced {side} relative necrosis "
            "volume, on per-patient means within each group"))
    for group in ("early", "advanced"):
        out += [
            MetricDef(name=f"n_arco_{group}", aggregation="count", unit="cases",
                      doc=f"hips with an {group} ARCO stage"),
            MetricDef(name=f"n_arco_{group}_patients", aggregation="count", unit="patients",
                      doc=f"patients with an {group} ARCO stage hip"),
        ]
    return out


def _grade_metrics() -> list[MetricDef]:
    out: list[MetricDef] = []
    for system, title in (("steinberg", "Steinberg"), ("jic", "JIC")):
        tasks: tuple[Task, ...] = ("segmentation", "classification") if system == "jic" else ("segmentation",)
        for key, short, doc, interval, shown in (
            ("accuracy", "acc.", "fraction of hips with the reference grade", True, True),
            ("kappa", "κ", "Cohen's kappa, unweighted", False, False),
            ("kappa_linear", "κ lin.", "Cohen's kappa, linear weights", True, True),
            ("kappa_quadratic", "κ quad.", "Cohen's kappa, quadratic weights", True, system == "steinberg"),
        ):
            out.append(MetricDef(
                name=f"{system}_{key}", aggregation="statistic", higher_is_better=True,
                title=f"{title} {short}", headline=key in ("accuracy", "kappa_linear"),
                table="grading" if shown else None, tasks=tasks, interval=interval,
                doc=f"{title} grade: {doc}",
            ))
        out.append(MetricDef(name=f"n_{system}_graded", aggregation="count", unit="cases",
                             doc=f"hips with a {title} grade on both sides"))
    classifier: tuple[Task, ...] = ("classification",)
    out += [
        MetricDef(name="jic_macro_auc", aggregation="statistic", higher_is_better=True,
                  title="JIC macro AUC", headline=True, table="grading", tasks=classifier,
                  interval=True, doc="mean one-vs-rest ROC AUC over classes with both outcomes"),
        MetricDef(name="jic_auc_{class}", aggregation="statistic", higher_is_better=True,
                  tasks=classifier, doc="one-vs-rest ROC AUC of one class"),
        MetricDef(name="jic_macro_precision", aggregation="statistic", higher_is_better=True,
                  tasks=classifier, doc="macro precision over the classes that occur"),
        MetricDef(name="jic_macro_recall", aggregation="statistic", higher_is_better=True,
                  tasks=classifier, doc="macro recall over the classes that occur"),
        MetricDef(name="jic_macro_f1", aggregation="statistic", higher_is_better=True,
                  tasks=classifier, doc="macro F1 over the classes that occur"),
        MetricDef(name="n_cases_scored", aggregation="count", unit="cases", tasks=classifier,
                  doc="hips with a reference class and a prediction"),
        MetricDef(name="heatmap_top_decile_on_necrosis", aggregation="mean", higher_is_better=True,
                  tasks=classifier, column="heatmap_top_decile_on_necrosis",
                  doc="fraction of the heat map's top decile on reference necrosis (mid-coronal)"),
    ]
    return out


def _run_metrics() -> list[MetricDef]:
    both: tuple[Task, ...] = ("segmentation", "classification")
    return [
        MetricDef(name="n_cases", aggregation="count", unit="cases", tasks=both,
                  doc="hips in the run"),
        MetricDef(name="n_patients", aggregation="count", unit="patients", tasks=both,
                  doc="patients in the run (the unit of the bootstrap and the tests)"),
        MetricDef(name="fit_seconds", aggregation="cost", unit="s", higher_is_better=False,
                  title="fit (s/fold)", headline=True, table="cost", tasks=both,
                  doc="wall-clock fit time, mean over folds"),
        MetricDef(name="predict_seconds_per_case", aggregation="cost", unit="s",
                  higher_is_better=False, title="predict (s/case)", headline=True, table="cost",
                  tasks=both, doc="wall-clock predict time per case"),
    ]


_BUILTIN = MetricRegistry(_label_metrics() + _volume_metrics() + _grade_metrics() + _run_metrics())


def default_metrics() -> MetricRegistry:
    """The built-in metrics (a fresh copy: adding to it changes nothing else)."""
    return _BUILTIN.copy()


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
        except Exception as e:  # noqa: BLE001 - one line that names the plugin
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
        shown = ", ".join(filter(None, ["headline" if d.headline else "", d.table or ""]))
        lines.append(
            f"| `{d.name}` | {d.unit} | {d.label or ''} | {better} | {d.aggregation} | "
            f"{'yes' if d.interval else ''} | {shown} | {d.doc.replace('|', chr(92) + '|')} |"
        )
    return "\n".join(lines) + "\n"
