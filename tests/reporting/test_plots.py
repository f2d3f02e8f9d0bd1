"""Run plots: real PNGs for normal and degenerate input (no case, one case, constant values)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from avnbench.reporting.plots import plot_bland_altman, plot_confusion, plot_relative_volume

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def volume_rows(n: int, constant: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    ref = np.full(n, 12.0) if constant else rng.uniform(0, 40, n)
    pred = ref if constant else ref + rng.normal(0, 3, n)
    return [{"case_id": f"c{i}", "necrosis_relvol_ref": float(r), "necrosis_relvol_pred": float(p),
             "necrosis_cm3_ref": float(r) / 10, "necrosis_cm3_pred": float(p) / 10}
            for i, (r, p) in enumerate(zip(ref, pred))]


def assert_png(path, min_width=300):
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.shape[1] >= min_width
    assert image[..., :3].std() > 0  # something was drawn


@pytest.mark.parametrize("rows", [volume_rows(20), volume_rows(1), volume_rows(3, constant=True), []],
                         ids=["twenty", "one", "constant", "none"])
def test_volume_plots_never_fail(rows, tmp_path):
    for plot in (plot_relative_volume, plot_bland_altman):
        path = plot(rows, tmp_path / "sub" / f"{plot.__name__}.png")
        assert path == tmp_path / "sub" / f"{plot.__name__}.png"
        assert_png(path)


def test_relative_volume_plot_with_nan_and_absolute_volumes(tmp_path):
    rows = volume_rows(5)
    rows[0]["necrosis_relvol_pred"] = float("nan")
    assert_png(plot_relative_volume(rows, tmp_path / "rel.png"))
    assert_png(plot_bland_altman(rows, tmp_path / "ba.png", quantity="necrosis_cm3"))


def test_confusion_plot(tmp_path):
    path = plot_confusion([[2, 1, 1], [1, 2, 0], [0, 1, 2]], ["A", "B", "C"], "Steinberg",
                          tmp_path / "cm.png")
    assert_png(path, min_width=200)
    assert_png(plot_confusion(np.zeros((4, 4)), ["none", "A", "B", "C"], "empty", tmp_path / "z.png"),
               min_width=200)
    # a matrix that does not fit its labels is drawn as a note, not an exception
    assert_png(plot_confusion([[1, 2]], ["A", "B"], "bad", tmp_path / "bad.png"), min_width=200)
