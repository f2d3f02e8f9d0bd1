"""Mid-coronal / mid-sagittal reformats land known physical points where expected."""

import numpy as np
import pytest

from avnbench.data.dataset import CaseMeta, Geometry, Landmarks, PatientAxes
from avnbench.errors import DataError
from avnbench.evaluation.slices import mid_coronal_slice, mid_sagittal_slice


def rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def make_meta(shape_zyx, spacing_zyx, direction, center, radius=10.0, landmarks=True):
    geometry = Geometry(
        size_xyz=tuple(int(s) for s in shape_zyx[::-1]),
        spacing_xyz=tuple(float(s) for s in spacing_zyx[::-1]),
        origin=(-20.0, 13.0, 7.0),
        direction=tuple(float(d) for d in np.asarray(direction).ravel()),
    )
    lm = None
    if landmarks:
        c = np.asarray(center, float)
        lm = Landmarks(
            head_center_mm=tuple(c),
            head_radius_mm=radius,
            acetabular_lateral_edge_mm=tuple(c + [9.0, 0, 0]),
            wb_medial_point_mm=tuple(c + [-9.0, 0, 0]),
            patient_axes=PatientAxes(lateral=(1.0, 0, 0), anterior=(0, -1.0, 0), superior=(0, 0, 1.0)),
        )
    return CaseMeta(case_id="t", patient_id="p", side="L", geometry=geometry, landmarks=lm)


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_known_point_lands_at_its_in_plane_coordinates(plane):
    shape, spacing = (30, 60, 50), (1.0, 0.44, 0.6)
    meta0 = make_meta(shape, spacing, rotation(25, 15), (0, 0, 0))
    voxel = np.array([14, 31, 22])
    point = meta0.geometry.index_to_physical(voxel)
    h_off, v_off = 3.0, 5.0
    h_axis = np.array([1.0, 0, 0]) if plane == "coronal" else np.array([0, -1.0, 0])
    center = point - h_off * h_axis - v_off * np.array([0, 0, 1.0])
    meta = make_meta(shape, spacing, rotation(25, 15), center)
    vol = np.zeros(shape, np.uint8)
    vol[tuple(voxel)] = 2
    fn = mid_coronal_slice if plane == "coronal" else mid_sagittal_slice
    sl = fn(vol, meta, pixel_mm=0.5)
    iv, ih = np.argmin(abs(sl.v_mm - v_off)), np.argmin(abs(sl.h_mm - h_off))
    assert sl.array[iv, ih] == 2
    hh, vv = sl.grid_mm()
    marked = sl.array == 2
    assert abs(hh[marked].mean() - h_off) < 0.5 and abs(vv[marked].mean() - v_off) < 0.5
    # default half width: radius + 10 mm, isotropic pixels
    assert sl.h_mm[-1] == pytest.approx(20.0) and sl.pixel_mm == pytest.approx(0.5)
    assert sl.array.shape == (81, 81)


def test_superior_is_increasing_row_and_images_interpolate():
    shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
    meta = make_meta(shape, spacing, np.eye(3), (0, 0, 0))
    meta = meta.model_copy(update={"geometry": meta.geometry.model_copy(update={"origin": (-20.0, -20.0, -20.0)})})
    z = np.arange(40, dtype=np.float32)[:, None, None] * np.ones((1, 40, 40), np.float32)
    sl = mid_coronal_slice(z, meta, pixel_mm=0.5, half_width_mm=5.0, order=1)
    # physical z = index - 20, so the value at v mm above the centre is 20 + v
    np.testing.assert_allclose(sl.array[:, 5], 20.0 + sl.v_mm, atol=1e-4)


def test_missing_landmarks_and_wrong_shape_are_data_errors():
    meta = make_meta((10, 10, 10), (1, 1, 1), np.eye(3), (0, 0, 0), landmarks=False)
    with pytest.raises(DataError, match="no landmarks"):
        mid_coronal_slice(np.zeros((10, 10, 10), np.uint8), meta)
    meta = make_meta((10, 10, 10), (1, 1, 1), np.eye(3), (0, 0, 0))
    with pytest.raises(DataError, match="does not match"):
        mid_coronal_slice(np.zeros((10, 10, 12), np.uint8), meta)
