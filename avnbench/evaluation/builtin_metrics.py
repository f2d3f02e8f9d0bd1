"""The built-in metric definitions: every number avnbench's own summaries report.

Read through :func:`avnbench.evaluation.metrics.default_metrics`; the order here is the column
order of the CLI and leaderboard tables. docs/metrics.md's table is generated from this list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from avnbench.evaluation.metrics import LABEL_SETS, MetricDef, Task


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


def _label_metrics() -> list[MetricDef]:
    out: list[MetricDef] = []
    shown = {"dice": {"vital", "necrosis", "head"}, "assd": {"vital", "necrosis"},
             "hd95": {"vital", "necrosis"}, "nsd1mm": {"vital", "necrosis"}}
    headline = {"dice": {"vital", "necrosis", "head"}, "assd": {"vital", "necrosis"},
                "hd95": {"necrosis"}, "nsd1mm": set()}
    # the leaderboard ranks by these, the first being its primary ranking
    board_rank = {("dice", "necrosis"): 1, ("dice", "vital"): 2, ("assd", "necrosis"): 3}
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
                column=name, cases=cases, board_rank=board_rank.get((kind, label)),
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


def builtin_metrics() -> list[MetricDef]:
    """Every built-in metric, in column order."""
    return _label_metrics() + _volume_metrics() + _grade_metrics() + _run_metrics()
