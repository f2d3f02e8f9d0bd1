import numpy as np
import pytest

from avnbench.evaluation.localization import heatmap_top_decile_on_necrosis


def _slice_with_necrosis() -> np.ndarray:
    """A 20×20 reference slice: head (1) with a 4×5 necrotic block (2) = 5 % of the image."""
    ref = np.zeros((20, 20), dtype=np.uint8)
    ref[4:16, 4:16] = 1
    ref[5:9, 6:11] = 2
    return ref


def test_heat_exactly_on_the_necrosis_scores_one():
    ref = _slice_with_necrosis()
    heat = (ref == 2).astype(float)  # 20 hot pixels of 400 = the top 5 %
    assert heatmap_top_decile_on_necrosis(heat, ref) == 1.0


def test_heat_on_the_background_scores_zero():
    ref = _slice_with_necrosis()
    heat = np.zeros((20, 20))
    heat[17:, :] = 3.0  # 60 pixels, all background
    assert heatmap_top_decile_on_necrosis(heat, ref) == 0.0


def test_half_on_necrosis_half_on_background_scores_half():
    ref = _slice_with_necrosis()
    heat = np.full((20, 20), 0.1)
    heat[5:9, 6:11] = 1.0  # 20 pixels on necrosis
    heat[0:2, 0:10] = 1.0  # 20 pixels on background: 40 of 400 = exactly the top decile
    assert heatmap_top_decile_on_necrosis(heat, ref) == pytest.approx(0.5)


def test_only_the_top_decile_counts():
    ref = _slice_with_necrosis()
    heat = np.linspace(0.0, 1.0, 400).reshape(20, 20)  # hottest rows at the bottom
    heat[ref == 2] = 0.5  # lukewarm necrosis stays below the 90th percentile
    assert heatmap_top_decile_on_necrosis(heat, ref) == 0.0
    heat[ref == 2] = 2.0
    assert heatmap_top_decile_on_necrosis(heat, ref) == pytest.approx(20 / 40)


def test_constant_heat_map_scores_the_chance_level():
    ref = _slice_with_necrosis()
    for value in (0.0, 7.0):
        score = heatmap_top_decile_on_necrosis(np.full((20, 20), value), ref)
        assert score == pytest.approx(20 / 400)


def test_non_finite_pixels_are_outside_the_image():
    ref = _slice_with_necrosis()
    heat = (ref == 2).astype(float)
    heat[15:, :] = np.nan  # 100 pixels outside the image, never in the top decile
    heat[0, 0] = np.inf
    assert heatmap_top_decile_on_necrosis(heat, ref) == 1.0
    assert heatmap_top_decile_on_necrosis(np.full((20, 20), np.nan), ref) is None


def test_no_necrosis_on_the_slice_gives_none():
    ref = _slice_with_necrosis()
    ref[ref == 2] = 1
    assert heatmap_top_decile_on_necrosis(np.random.default_rng(0).random((20, 20)), ref) is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        heatmap_top_decile_on_necrosis(np.zeros((20, 21)), _slice_with_necrosis())
    with pytest.raises(ValueError, match="2-D"):
        heatmap_top_decile_on_necrosis(np.zeros((2, 20, 20)), np.zeros((2, 20, 20)))
