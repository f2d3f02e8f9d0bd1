"""nnU-Net's postprocessing rule, in memory: the same steps as nnU-Net's determine_postprocessing
on the same label maps, and applying them removes what they say."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from avnbench_nnunet.postprocessing import (
    Postprocessing,
    apply_postprocessing,
    determine_postprocessing,
)


def _head(shape=(12, 16, 16)) -> np.ndarray:
    """A reference: a block of vital bone (1) with a necrotic core (2)."""
    ref = np.zeros(shape, np.uint8)
    ref[2:10, 3:11, 3:11] = 1
    ref[4:7, 5:8, 5:8] = 2
    return ref


def _with(ref: np.ndarray, *blobs: tuple[int, tuple[slice, ...]]) -> np.ndarray:
    out = ref.copy()
    for label, where in blobs:
        out[where] = label
    return out


FAR_VITAL = (1, (slice(0, 2), slice(13, 16), slice(13, 16)))  # a stray vital component
FAR_NECROSIS = (2, (slice(10, 12), slice(0, 2), slice(0, 2)))  # a stray necrosis component
NECROSIS_IN_VITAL = (2, (slice(8, 9), slice(9, 10), slice(9, 10)))  # touches the head: same fg component
LOST_CORE = (1, (slice(4, 7), slice(5, 8), slice(5, 8)))  # the necrosis predicted as vital

# nnU-Net's determine_postprocessing starts process pools (about 10 s a case here): few cases.
CASES = {
    "stray foreground and necrosis inside it: both steps": [[FAR_VITAL, NECROSIS_IN_VITAL], [FAR_NECROSIS], [FAR_VITAL]],
    "nothing to remove": [[], [], []],
    "a case whose necrosis is predicted as vital bone": [[LOST_CORE, FAR_VITAL], [], []],
}


def _nnunet_steps(tmp_path, refs, preds) -> list[list[int]]:
    """The steps nnU-Net's own determine_postprocessing picks from NIfTI folders."""
    from nnunetv2.postprocessing.remove_connected_components import (
        determine_postprocessing as nnunet_determine,
    )

    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    for i, (r, p) in enumerate(zip(refs, preds)):
        sitk.WriteImage(sitk.GetImageFromArray(r), str(ref_dir / f"c{i}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(p), str(pred_dir / f"c{i}.nii.gz"))
    plans = {"dataset_name": "t", "plans_name": "p", "image_reader_writer": "SimpleITKIO",
             "label_manager": "LabelManager", "configurations": {}, "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "original_median_spacing_after_transp": [1, 1, 1],
             "original_median_shape_after_transp": [12, 16, 16], "experiment_planner_used": "x",
             "foreground_intensity_properties_per_channel": {}}
    dataset = {"labels": {"background": 0, "vital": 1, "necrosis": 2}, "file_ending": ".nii.gz",
               "channel_names": {"0": "T1"}, "numTraining": len(refs)}
    _, kwargs = nnunet_determine(str(pred_dir), str(ref_dir), plans, dataset, num_processes=1,
                                 keep_postprocessed_files=False)
    return [sorted(np.atleast_1d(k["labels_or_regions"]).tolist()) for k in kwargs]


@pytest.mark.parametrize("blobs", list(CASES.values()), ids=list(CASES))
def test_same_steps_as_nnunets_determine_postprocessing(blobs, tmp_path):
    refs = [_head() for _ in blobs]
    preds = [_with(r, *b) for r, b in zip(refs, blobs)]
    ours = determine_postprocessing([f"c{i}" for i in range(len(refs))], preds, refs)
    assert [s.labels for s in ours.steps] == _nnunet_steps(tmp_path, refs, preds)


def test_applying_the_steps_removes_the_stray_components_only():
    ref = _head()
    pred = _with(ref, FAR_VITAL, FAR_NECROSIS)
    decision = determine_postprocessing(["c0"], [pred], [ref])
    assert decision.steps, "stray components lower Dice: a step must be kept"
    assert decision.dice_after["1"] > decision.dice_before["1"]
    np.testing.assert_array_equal(apply_postprocessing(pred, decision), ref)
    assert decision.describe().startswith("keep largest")


def test_no_cases_means_no_postprocessing():
    decision = determine_postprocessing([], [], [])
    assert decision.steps == [] and decision.describe() == "none"
    pred = _with(_head(), FAR_VITAL)
    np.testing.assert_array_equal(apply_postprocessing(pred, Postprocessing()), pred)
