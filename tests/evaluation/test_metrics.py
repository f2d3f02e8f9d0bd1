"""The metric registry: it describes every summary key, drives the docs table, and takes plugin
metrics through ``avnbench_register_metrics`` into a run's summary."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from avnbench.data.dataset import CaseMeta, Geometry
from avnbench.errors import PluginError
from avnbench.evaluation.metrics import (
    MetricDef,
    collect_metrics,
    default_metrics,
    markdown_table,
)
from avnbench.evaluation.scoring import score_case
from avnbench.evaluation.summaries import (
    summarize_classification,
    summarize_segmentation,
)
from avnbench.hookspecs import hookimpl
from avnbench.plugins import load_registry

ANISO = (1.0, 0.44, 0.44)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
#: DESIGN.md "Tracking and leaderboards": the names that must not change.
DESIGN_NAMES = [
    "dice_vital", "dice_necrosis", "dice_head", "assd_vital_mm", "assd_necrosis_mm", "hd95_vital_mm",
    "hd95_necrosis_mm", "nsd1mm_vital", "nsd1mm_necrosis", "necrosis_cm3_mae",
    "necrosis_relvol_pearson_r", "steinberg_accuracy", "steinberg_kappa_linear",
    "steinberg_kappa_quadratic", "jic_accuracy", "jic_kappa_linear", "jic_macro_auc", "fit_seconds",
    "predict_seconds_per_case",
]


def meta(case_id: str, patient_id: str, arco: str, shape=(20, 40, 40)) -> CaseMeta:
    geometry = Geometry(size_xyz=tuple(reversed(shape)), spacing_xyz=tuple(reversed(ANISO)),
                        origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    return CaseMeta(case_id=case_id, patient_id=patient_id, side="RL"[int(case_id[1:]) % 2],
                    geometry=geometry, arco=arco)


def scored_rows() -> list[dict]:
    """Six scored hips of four patients (two bilateral), two of them lesion-free."""
    head = np.zeros((20, 40, 40), dtype=np.uint8)
    head[5:15, 10:30, 10:30] = 1
    lesion = head.copy()
    lesion[5:12, 10:18, 10:20] = 2
    shifted = head.copy()
    shifted[6:13, 11:19, 10:20] = 2
    small = head.copy()
    small[5:9, 10:14, 10:14] = 2
    pairs = [(lesion, lesion), (shifted, lesion), (small, lesion), (head, lesion),  # last: missed
             (head, head), (small, head)]  # lesion-free: correct, then a false positive
    patients = ["p0", "p0", "p1", "p1", "p2", "p3"]
    return [score_case(pred, ref, ANISO, meta(f"c{i}", patients[i], ("I", "IIIA")[i % 2]))
            for i, (pred, ref) in enumerate(pairs)]


def test_design_names_are_registered_and_unique():
    registry = default_metrics()
    names = [d.name for d in registry]
    assert len(names) == len(set(names))
    assert [n for n in DESIGN_NAMES if n not in registry] == []
    headline = [d.name for d in registry.headline()]
    assert "assd_necrosis_mm" in headline and "assd_necrosis_mm_penalized" not in headline
    assert all(d.title for d in registry if d.headline or d.table)


def test_every_summary_key_is_described_by_the_registry():
    registry = default_metrics()
    summary = summarize_segmentation(scored_rows(), n_bootstrap=50, seed=1)
    undescribed = [k for k in summary.metrics if registry.describe(k) is None]
    assert undescribed == []
    rows = [{"case_id": f"c{i}", "patient_id": f"p{i // 2}", "jic_ref": ref, "prob_A": pa,
             "prob_B": 1 - pa, "heatmap_top_decile_on_necrosis": 0.1 * i}
            for i, (ref, pa) in enumerate([("A", .9), ("A", .6), ("B", .3), ("B", .7), ("A", .8)])]
    classified = summarize_classification(rows, ["A", "B"], n_bootstrap=50)
    assert [k for k in classified.metrics if registry.describe(k) is None] == []
    assert classified.metrics["n_patients"] == 3
    assert classified.metrics["heatmap_top_decile_on_necrosis"] == pytest.approx(0.2)
    # every key a definition promises is one the describe() parser maps back to it
    for d in registry:
        for key in d.summary_keys():
            assert registry.describe(key.replace("{class}", "C1"))[0] is d, key


def test_docs_table_is_the_registry():
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- metrics-table:start -->\n(.*?)<!-- metrics-table:end -->", text, re.DOTALL)
    assert match, "docs/metrics.md needs the generated table between its markers"
    assert match.group(1) == markdown_table(), (
        "docs/metrics.md is out of date: paste avnbench.evaluation.metrics.markdown_table()"
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "x", "aggregation": "mean"}, "needs a column or compute"),
        ({"name": "x", "aggregation": "mean", "column": "a", "compute": abs}, "needs a column or compute"),
        ({"name": "x", "aggregation": "statistic", "column": "a"}, "only mean/rate"),
        ({"name": "x", "aggregation": "mean", "column": "a", "cases": "both_nonempty"}, "needs a label set"),
        ({"name": "Bad Name", "aggregation": "count"}, "pattern"),
        ({"name": "x", "aggregation": "median"}, "aggregation"),
        ({"name": "x", "aggregation": "count", "colour": "red"}, "colour"),
    ],
)
def test_bad_metric_definitions_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        MetricDef(doc="a metric", **fields)


# ---- plugin metrics --------------------------------------------------------------------------


def _signed_volume_error(row):
    return row["necrosis_cm3_pred"] - row["necrosis_cm3_ref"]


class VolumeBiasPlugin:
    """A plugin adding one case metric computed from the scored rows."""

    __name__ = "volume-bias"

    @hookimpl
    def avnbench_register_metrics(self, register):
        register(MetricDef(name="necrosis_cm3_bias", aggregation="mean", unit="cm³",
                           compute=_signed_volume_error, interval=True,
                           doc="signed necrosis volume error, pred − ref"))


class ClashingPlugin:
    __name__ = "clash"

    @hookimpl
    def avnbench_register_metrics(self, register):
        register(MetricDef(name="dice_vital", aggregation="count", doc="not Dice"))


def test_a_plugin_metric_is_summarised_like_a_built_in_one():
    registry = load_registry(extra_plugins=(VolumeBiasPlugin(),), use_entry_points=False)
    metrics = collect_metrics(registry.pm)
    assert metrics.origin["necrosis_cm3_bias"] == "volume-bias"
    rows = scored_rows()
    summary = summarize_segmentation(rows, n_bootstrap=100, seed=2, metrics=metrics)
    errors = np.array([_signed_volume_error(r) for r in rows])
    m = summary.metrics
    assert m["necrosis_cm3_bias"] == pytest.approx(errors.mean())
    assert m["necrosis_cm3_bias_median"] == pytest.approx(np.median(errors))
    assert m["necrosis_cm3_bias_q1"] == pytest.approx(np.percentile(errors, 25))
    assert m["necrosis_cm3_bias_n"] == len(rows)
    assert m["necrosis_cm3_bias_ci_low"] <= m["necrosis_cm3_bias"] <= m["necrosis_cm3_bias_ci_high"]
    assert "necrosis_cm3_bias" not in summarize_segmentation(rows, n_bootstrap=0).metrics


def test_a_clashing_or_failing_plugin_metric_is_named():
    registry = load_registry(extra_plugins=(ClashingPlugin(),), use_entry_points=False)
    with pytest.raises(PluginError, match="plugin 'clash' registers metric 'dice_vital', which 'avnbench'"):
        collect_metrics(registry.pm)
    broken = default_metrics()
    broken.register(MetricDef(name="broken", aggregation="mean", compute=lambda row: row["nope"],
                              doc="reads a column no row has"), "brittle")
    with pytest.raises(PluginError, match="metric 'broken' failed on case c0: KeyError"):
        summarize_segmentation(scored_rows(), n_bootstrap=0, metrics=broken)


def test_a_plugin_metric_reaches_the_run_result(tiny_dataset, tmp_path):
    from avnbench.methods import Method, MethodCard, SegmentationPrediction
    from avnbench.runner import run_benchmark
    from avnbench.testing import _MethodsPlugin

    class Nothing(Method):
        card = MethodCard(name="predicts-nothing", task="segmentation", description="all background",
                          citation="none")

        def fit(self, train_cases, val_cases, workdir, device):
            pass

        def predict(self, cases, workdir, device):
            for case in cases:
                yield SegmentationPrediction(case_id=case.case_id,
                                             labels=np.zeros(case.geometry.shape_zyx, np.uint8))

    registry = load_registry(extra_plugins=(_MethodsPlugin([Nothing]), VolumeBiasPlugin()),
                             use_entry_points=False)
    result = run_benchmark("predicts-nothing", tiny_dataset.root, tmp_path / "work", preset="smoke",
                           folds=[0], registry=registry, n_bootstrap=20)
    expected = np.mean([-r["necrosis_cm3_ref"] for r in result.rows])
    assert result.metrics["necrosis_cm3_bias"] == pytest.approx(expected)
    assert math.isfinite(result.metrics["necrosis_cm3_bias_median"])


class RaisingPlugin:
    __name__ = "raises"

    @hookimpl
    def avnbench_register_metrics(self, register):
        raise RuntimeError("no metrics today")


def test_a_plugin_whose_metrics_hook_raises_is_named():
    registry = load_registry(extra_plugins=(RaisingPlugin(),), use_entry_points=False)
    with pytest.raises(PluginError, match="plugin 'raises' failed to register its metrics: RuntimeError"):
        collect_metrics(registry.pm)
