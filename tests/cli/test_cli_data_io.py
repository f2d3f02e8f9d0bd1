"""``avnbench data import | check | preview`` from the command line: results and one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from avnbench.cli import main

AVNBENCH = Path(sys.executable).with_name("avnbench")
SMALL_GRID = ["--target-spacing", "1.0", "0.6", "0.6", "--target-shape", "20", "36", "36"]
HEADER = "case_id,patient_id,side,image,label,steinberg,jic,arco"


def _hip(seed: int = 0, side: str = "L"):
    """A neck-cut ball (label 1) with a superolateral cap (label 2) in a noisy float image."""
    shape = (20, 36, 36)
    rng = np.random.default_rng(seed)
    q = (np.indices(shape).transpose(1, 2, 3, 0) * np.array([1.0, 0.6, 0.6]))[..., ::-1] - [10.5, 10.5, 10.0]
    lateral = np.array([1.0 if side == "L" else -1.0, 0, 0])
    neck = np.cos(0.6) * lateral - np.sin(0.6) * np.array([0, 0, 1.0])
    head = (np.linalg.norm(q, axis=-1) <= 8.0) & (q @ neck <= 5.0)
    labels = head.astype(np.uint8)
    labels[head & (q @ ((lateral + [0, 0, 1]) / np.sqrt(2)) > 4.0)] = 2
    image = sitk.GetImageFromArray((100 + 200 * head + rng.normal(0, 5, shape)).astype(np.float32))
    label = sitk.GetImageFromArray(labels)
    for im in (image, label):
        im.SetSpacing((0.6, 0.6, 1.0))
        im.SetOrigin((-30.0, 12.0, 40.0))
    return image, label


@pytest.fixture
def source(tmp_path) -> Path:
    """A folder with two good cases (NIfTI) and a manifest naming them."""
    src = tmp_path / "src"
    src.mkdir()
    for k, side in enumerate("LR"):
        image, label = _hip(k, side)
        sitk.WriteImage(image, str(src / f"c{k}.nii.gz"))
        sitk.WriteImage(label, str(src / f"c{k}_seg.nii.gz"))
    (src / "m.csv").write_text(
        f"{HEADER}\nc0,p0,L,c0.nii.gz,c0_seg.nii.gz,A,,I\nc1,p0,R,c1.nii.gz,c1_seg.nii.gz,,,\n"
    )
    return src


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``avnbench`` in-process through its console entry point: (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _import(src: Path, out: Path, capsys, *extra: str, manifest: str = "m.csv"):
    return run_main(["data", "import", str(src / manifest), "--out", str(out), *SMALL_GRID, *extra], capsys)


# ----------------------------------------------------------------------------- real console script


def test_console_script_imports_checks_and_previews(source, tmp_path):
    out = tmp_path / "ds"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([str(AVNBENCH), "data", "import", str(source / "m.csv"), "--out", str(out), *SMALL_GRID],
                          capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 cases imported" in done.stdout and "avnbench data check" in done.stdout
    assert (out / "imagesTr" / "c0_0000.nii.gz").is_file() and (out / "labelsTr" / "c1.nii.gz").is_file()
    # the dataset check and the preview chained in one process to keep the test fast
    png = tmp_path / "c0.png"
    code = (
        "from avnbench.cli import main\nimport sys\n"
        f"try:\n    main(['data', 'check', {str(out)!r}])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"main(['data', 'preview', {str(out)!r}, '--case', 'c0', '--out', {str(png)!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "estimated landmarks" in done.stdout and "c0, c1" in done.stdout and "ok" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_script_bad_label_is_one_line_and_exit_2(source, tmp_path):
    label = sitk.ReadImage(str(source / "c1_seg.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    array[2, 2, 2] = 4
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(label)
    sitk.WriteImage(bad, str(source / "c1_seg.nii.gz"))
    done = subprocess.run([str(AVNBENCH), "data", "import", str(source / "m.csv"), "--out", str(tmp_path / "ds"), *SMALL_GRID],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert_one_line_error(done.returncode, done.stderr, "c1_seg.nii.gz", "label values 4 outside {0, 1, 2}")
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_console_script_check_exits_non_zero_on_errors(source, tmp_path, capsys):
    out = tmp_path / "ds"
    assert _import(source, out, capsys)[0] == 0
    (out / "labelsTr" / "c0.nii.gz").write_bytes(b"garbage")
    done = subprocess.run([str(AVNBENCH), "data", "check", str(out)], capture_output=True, encoding="utf-8", errors="replace",
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert done.returncode == 1
    assert "ERROR" in done.stdout and "c0.nii.gz: not gzip-compressed" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


# ----------------------------------------------------------------------------- bad input, in-process


def _write_variant(source: Path, name: str, image=None, label=None) -> None:
    if image is not None:
        sitk.WriteImage(image, str(source / f"{name}.mha"))
    if label is not None:
        sitk.WriteImage(label, str(source / f"{name}_seg.mha"))
    with open(source / "m.csv", "a") as f:
        f.write(f"{name},p9,L,{name}.mha,{name}_seg.mha,,,\n")


def _shifted(label, **changes):
    new = sitk.Image(label)
    if "spacing" in changes:
        new.SetSpacing(changes["spacing"])
    if "origin" in changes:
        new.SetOrigin(changes["origin"])
    if "direction" in changes:
        new.SetDirection(changes["direction"])
    return new


@pytest.mark.parametrize(
    ("variant", "needles"),
    [
        ("missing", ["missing.mha", "file not found"]),
        ("corrupt", ["corrupt.mha", "cannot read image"]),
        ("size", ["size_seg.mha", "not on the grid of size.mha", "size 36 x 36 x 19"]),
        ("spacing", ["spacing_seg.mha", "spacing 0.6 x 0.6 x 1.1"]),
        ("origin", ["origin_seg.mha", "origin -29 x 12 x 40"]),
        ("direction", ["direction_seg.mha", "direction"]),
        ("nan", ["nan.mha", "1 NaN intensities"]),
        ("labels", ["labels_seg.mha", "label values 5 outside {0, 1, 2}"]),
        ("empty_head", ["empty_head_seg.mha", "no femoral head"]),
        ("format", ["format.png", "unsupported image format"]),
    ],
)
def test_bad_case_files_are_one_line_errors_and_write_nothing(source, tmp_path, capsys, variant, needles):
    image, label = _hip(3)
    if variant == "missing":
        _write_variant(source, variant, label=label)
    elif variant == "corrupt":
        (source / "corrupt.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 9 9 9\nElementType = MET_FLOAT\n"
                                            "ElementDataFile = LOCAL\n\x00\x01")
        _write_variant(source, variant, label=label)
    elif variant == "size":
        _write_variant(source, variant, image=image, label=label[:, :, :19])
    elif variant == "spacing":
        _write_variant(source, variant, image=image, label=_shifted(label, spacing=(0.6, 0.6, 1.1)))
    elif variant == "origin":
        _write_variant(source, variant, image=image, label=_shifted(label, origin=(-29.0, 12.0, 40.0)))
    elif variant == "direction":
        _write_variant(source, variant, image=image, label=_shifted(label, direction=(0, 1, 0, 1, 0, 0, 0, 0, 1)))
    elif variant == "nan":
        array = sitk.GetArrayFromImage(image)
        array[1, 2, 3] = np.nan
        nan_image = sitk.GetImageFromArray(array)
        nan_image.CopyInformation(image)
        _write_variant(source, variant, image=nan_image, label=label)
    elif variant == "labels":
        array = sitk.GetArrayFromImage(label)
        array[0, 0, 0] = 5
        bad = sitk.GetImageFromArray(array)
        bad.CopyInformation(label)
        _write_variant(source, variant, image=image, label=bad)
    elif variant == "empty_head":
        _write_variant(source, variant, image=image, label=label * 0)
    elif variant == "format":
        (source / "format.png").write_bytes(b"\x89PNG")
        sitk.WriteImage(label, str(source / "format_seg.mha"))
        with open(source / "m.csv", "a") as f:
            f.write("format,p9,L,format.png,format_seg.mha,,,\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    for name in ("dataset.json", "cases.json"):  # --force replaces only an earlier dataset
        (out / name).write_text("{}")
    before = tree(out)
    code, _, err = _import(source, out, capsys, "--force")
    assert_one_line_error(code, err, *needles)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp folder left


@pytest.mark.parametrize(
    ("manifest", "needles"),
    [
        ("case_id,patient_id,side,image\nc0,p0,L,c0.nii.gz\n", ["m.csv", "missing column(s) label"]),
        ("", ["m.csv", "empty manifest"]),
        (f"{HEADER}\n", ["m.csv", "no cases"]),
        (f"{HEADER}\nc0,p0,middle,c0.nii.gz,c0_seg.nii.gz,,,\n", ["m.csv:2", "side 'middle'"]),
        (f"{HEADER}\nc0,p0,L,c0.nii.gz,c0_seg.nii.gz,,D1,\n", ["m.csv:2", "jic 'D1' is not one of A, B, C1, C2"]),
        (f"{HEADER}\nc0,p0,L,c0.nii.gz,c0_seg.nii.gz,,,\nc0,p1,R,c1.nii.gz,c1_seg.nii.gz,,,\n",
         ["m.csv:3", "duplicate case_id 'c0'", "m.csv:2"]),
        (f"{HEADER}\nc0,p0,L,../outside.nii.gz,c0_seg.nii.gz,,,\n",
         ["m.csv:2", "outside the manifest's folder", "--allow-absolute-paths"]),
        (f"{HEADER}\nc0,p0,L,/etc/hostname,c0_seg.nii.gz,,,\n", ["m.csv:2", "/etc/hostname", "--allow-absolute-paths"]),
    ],
)
def test_bad_manifests_are_one_line_errors(source, tmp_path, capsys, manifest, needles):
    (source / "m.csv").write_text(manifest)
    code, _, err = _import(source, tmp_path / "out", capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists()


def test_allow_absolute_paths_lets_files_elsewhere_in(source, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("c0.nii.gz", "c0_seg.nii.gz"):
        shutil.move(source / name, elsewhere / name)
    (source / "m.csv").write_text(f"{HEADER}\nc0,p0,L,{elsewhere / 'c0.nii.gz'},../elsewhere/c0_seg.nii.gz,,,\n")
    code, _, err = _import(source, tmp_path / "out", capsys)
    assert_one_line_error(code, err, "--allow-absolute-paths")
    code, out, err = _import(source, tmp_path / "out", capsys, "--allow-absolute-paths")
    assert code == 0, err
    assert (tmp_path / "out" / "imagesTr" / "c0_0000.nii.gz").is_file()


def test_non_empty_out_needs_force_and_is_left_alone(source, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("precious")
    before = tree(out)
    code, _, err = _import(source, out, capsys)
    assert_one_line_error(code, err, str(out), "not empty", "--force")
    assert tree(out) == before
    code, _, err = _import(source, out, capsys, "--force")  # --force replaces only a dataset
    assert_one_line_error(code, err, str(out), "not an avnbench dataset")
    assert tree(out) == before
    for name in ("dataset.json", "cases.json"):
        (out / name).write_text("{}")
    code, stdout, err = _import(source, out, capsys, "--force", "--name", "hips-v1")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["cases.json", "dataset.json", "imagesTr", "labelsTr"]
    assert "hips-v1: 2 cases imported" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_out_that_is_a_file_and_a_missing_source(source, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _import(source, tmp_path / "file", capsys)
    assert_one_line_error(code, err, "is not a folder")
    code, _, err = run_main(["data", "import", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "nope.csv", "not found")


def test_bad_target_grid_and_name_are_config_errors(source, tmp_path, capsys):
    code, _, err = run_main(["data", "import", str(source / "m.csv"), "--out", str(tmp_path / "o"),
                             "--target-spacing", "1", "0", "0.5"], capsys)
    assert_one_line_error(code, err, "--target-spacing")
    code, _, err = _import(source, tmp_path / "o", capsys, "--name", "bad name/..")
    assert_one_line_error(code, err, "dataset name", "--name")
    assert not (tmp_path / "o").exists()


def test_nnunet_folder_import_and_check(source, tmp_path, capsys):
    raw = tmp_path / "Dataset777_Hip"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for k in range(2):
        shutil.copy(source / f"c{k}.nii.gz", raw / "imagesTr" / f"hip{k}_0000.nii.gz")
        shutil.copy(source / f"c{k}_seg.nii.gz", raw / "labelsTr" / f"hip{k}.nii.gz")
    (raw / "dataset.json").write_text('{"channel_names": {"0": "T1"}, "labels": {"background": 0, "vital": 1, '
                                      '"necrosis": 2}, "numTraining": 2, "file_ending": ".nii.gz"}')
    out = tmp_path / "ds"
    code, stdout, err = run_main(["data", "import", str(raw), "--out", str(out), *SMALL_GRID], capsys)
    assert code == 0, err
    assert "Dataset777_Hip: 2 cases imported" in stdout and "own patient" in err
    code, stdout, _ = run_main(["data", "check", str(out)], capsys)
    assert code == 0 and "Dataset777_Hip (real data)" in stdout
    (raw / "labelsTr" / "hip1.nii.gz").unlink()
    code, _, err = run_main(["data", "import", str(raw), "--out", str(tmp_path / "ds2"), *SMALL_GRID], capsys)
    assert_one_line_error(code, err, "hip1.nii.gz", "file not found")


def test_preview_errors(source, tmp_path, capsys):
    out = tmp_path / "ds"
    assert _import(source, out, capsys)[0] == 0
    code, _, err = run_main(["data", "preview", str(out), "--case", "nope", "--out", str(tmp_path / "p.png")], capsys)
    assert_one_line_error(code, err, "no case 'nope'")
    code, _, err = run_main(["data", "preview", str(out), "--case", "c0", "--out", str(tmp_path / "p.jpg")], capsys)
    assert_one_line_error(code, err, "PNG")
    code, _, err = run_main(["data", "check", str(tmp_path / "missing")], capsys)
    assert_one_line_error(code, err, "dataset folder not found")


def test_preview_without_landmarks_and_titles(source, tmp_path, capsys):
    import json

    from avnbench.data.dataset import load_dataset
    from avnbench.data.preview import preview_title

    out = tmp_path / "ds"
    assert _import(source, out, capsys, "--name", "hips")[0] == 0
    ds = load_dataset(out)
    assert preview_title(ds, ds["c0"]).startswith("hips: case c0 (L hip, patient p0) — imported data\n")
    assert "Steinberg A" in preview_title(ds, ds["c0"]) and "(landmarks estimated)" in preview_title(ds, ds["c0"])
    cases = json.loads((out / "cases.json").read_text())
    cases["synthetic"] = True
    cases["cases"][1]["landmarks"] = None
    (out / "cases.json").write_text(json.dumps(cases))
    ds = load_dataset(out)
    assert "— synthetic phantom\n" in preview_title(ds, ds["c1"])
    assert "no landmarks" in preview_title(ds, ds["c1"])
    png = tmp_path / "prev" / "c1.png"
    code, stdout, err = run_main(["data", "preview", str(out), "--case", "c1", "--out", str(png)], capsys)
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG" and not list(png.parent.glob(".*partial"))
