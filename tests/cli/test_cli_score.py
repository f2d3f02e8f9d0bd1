"""``avnbench score`` on a small dataset of NIfTI files written here with numpy and SimpleITK."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from avnbench.data.dataset import (
    CaseMeta,
    CasesFile,
    Geometry,
    write_cases_file,
    write_dataset_json,
)
from avnbench.testing import run_cli

SHAPE = (16, 32, 32)  # z, y, x
SPACING_ZYX = (1.0, 0.5, 0.5)
ARCO = ["I", "II", "IIIA", "IV"]


def label_map(case: int) -> np.ndarray:
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING_ZYX)), indexing="ij")
    centre = (8.0 + 0.1 * case, 8.0, 8.0)
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    labels = (r <= 5.5).astype(np.uint8)
    labels[(labels == 1) & (grids[0] > 9.0 - 0.8 * case)] = 2  # necrosis grows with the case
    return labels


def write_image(array: np.ndarray, path: Path, spacing_zyx=SPACING_ZYX) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing_zyx)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "Dataset900_tiny"
    metas = []
    for k in range(4):
        case_id = f"hip_{k:03d}"
        labels = label_map(k)
        write_image(labels, root / "labelsTr" / f"{case_id}.nii.gz")
        write_image((labels * 100).astype(np.float32), root / "imagesTr" / f"{case_id}_0000.nii.gz")
        image = sitk.ReadImage(str(root / "labelsTr" / f"{case_id}.nii.gz"))
        metas.append(CaseMeta(case_id=case_id, patient_id=f"p{k // 2}", side="LR"[k % 2],
                              arco=ARCO[k], geometry=Geometry.of(image)))
    write_dataset_json(root, "tiny", len(metas), synthetic=True)
    write_cases_file(root, CasesFile(name="tiny", synthetic=True, cases=metas))
    return root




def copy_predictions(dataset_dir: Path, dest: Path) -> Path:
    shutil.copytree(dataset_dir / "labelsTr", dest)
    return dest


def test_scoring_a_dataset_against_itself_is_perfect(dataset_dir, tmp_path, capsys, monkeypatch):
    pred = copy_predictions(dataset_dir, tmp_path / "pred")
    before = sorted(p.name for p in pred.iterdir())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["score", "--pred", str(pred), "--ref", str(dataset_dir),
                              "--bootstrap", "50"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in pred.iterdir()) == before, "nothing is written into the prediction folder"
    scores = tmp_path / "scores" / "pred"
    rows = pd.read_csv(scores / "scores.csv")
    assert list(rows["case_id"]) == [f"hip_{k:03d}" for k in range(4)]
    for label in ("vital", "necrosis", "head"):
        assert (rows[f"dice_{label}"] == 1.0).all()
        assert (rows[f"assd_{label}_mm"] == 0.0).all() and (rows[f"hd95_{label}_mm"] == 0.0).all()
        assert (rows[f"nsd1mm_{label}"] == 1.0).all()
    assert (rows["necrosis_relvol_ref"] == rows["necrosis_relvol_pred"]).all()
    summary = json.loads((scores / "scores.summary.json").read_text())
    assert summary["dataset"] == "tiny" and summary["synthetic"] is True
    assert summary["metrics"]["dice_necrosis"] == 1.0 and summary["metrics"]["n_cases"] == 4
    assert summary["metrics"]["steinberg_accuracy"] == 1.0
    assert (scores / "scores_relative_volume.png").stat().st_size > 1000
    assert "SYNTHETIC" in out and "Dice necrosis" in out

    # a second run does not overwrite what the first wrote unless asked to
    code, _, err = run_cli(["score", "--pred", str(pred), "--ref", str(dataset_dir)], capsys)
    assert code == 2 and "exists; pass --force" in err and "Traceback" not in err
    code, _, err = run_cli(["score", "--pred", str(pred), "--ref", str(dataset_dir), "--force",
                            "--bootstrap", "0", "--no-plots"], capsys)
    assert code == 0, err


def test_a_perturbed_prediction_scores_worse(dataset_dir, tmp_path, capsys):
    pred = copy_predictions(dataset_dir, tmp_path / "pred")
    path = pred / "hip_002.nii.gz"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    labels = np.where(labels == 2, 1, labels)  # necrosis missed entirely
    labels[:, :, 1:] = labels[:, :, :-1].copy()  # and the head shifted by one voxel
    write_image(labels.astype(np.uint8), path)
    out_csv = tmp_path / "elsewhere" / "scores.csv"
    code, _, err = run_cli(["score", "--pred", str(pred), "--ref", str(dataset_dir),
                            "--out", str(out_csv), "--bootstrap", "0"], capsys)
    assert code == 0, err
    rows = pd.read_csv(out_csv).set_index("case_id")
    bad = rows.loc["hip_002"]
    assert bad["dice_necrosis"] == 0.0 and bad["empty_necrosis"] == "pred"
    assert 0.5 < bad["dice_head"] < 1.0 and bad["assd_head_mm"] > 0 and bad["hd95_head_mm"] == 0.5
    assert bad["steinberg_pred"] == "none" and bad["steinberg_ref"] != "none"
    assert (rows.drop(index="hip_002")["dice_head"] == 1.0).all()
    summary = json.loads(out_csv.with_name("scores.summary.json").read_text())["metrics"]
    assert summary["n_empty_one_necrosis"] == 1 and summary["dice_necrosis"] == 0.75


def test_missing_prediction_names_the_case(dataset_dir, tmp_path, capsys, monkeypatch):
    pred = copy_predictions(dataset_dir, tmp_path / "pred")
    (pred / "hip_001.nii.gz").unlink()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["score", "--pred", str(pred), "--ref", str(dataset_dir)], capsys)
    assert code == 2
    assert "no prediction for case hip_001" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "scores" / "pred" / "scores.csv").exists()


def test_mismatched_geometry_names_the_case(dataset_dir, tmp_path, capsys, monkeypatch):
    pred = copy_predictions(dataset_dir, tmp_path / "pred")
    monkeypatch.chdir(tmp_path)
    write_image(label_map(3), pred / "hip_003.nii.gz", spacing_zyx=(1.0, 0.5, 0.6))
    code, _, err = run_cli(["score", "--pred", str(pred), "--ref", str(dataset_dir)], capsys)
    assert code == 2
    assert "case hip_003: prediction geometry does not match" in err and "spacing" in err
    assert len(err.strip().splitlines()) == 1

    write_image(label_map(3)[:-1], pred / "hip_003.nii.gz")
    code, _, err = run_cli(["score", "--pred", str(pred), "--ref", str(dataset_dir)], capsys)
    assert code == 2 and "case hip_003" in err and "size" in err


# --- outside predictions as a run of their own (``--name``) -------------------------------------

NNUNET_FILES = ("plans.json", "dataset.json", "predict_from_raw_data_args.json")


def nnunet_folder(dataset, case_ids, dest: Path) -> Path:
    """An nnU-Net style prediction folder: ``{case}.nii.gz`` on the reference grid (necrosis
    shrunk by one voxel on every other case, so the Dice differ) beside nnU-Net's json files."""
    from scipy import ndimage

    dest.mkdir(parents=True)
    for i, case_id in enumerate(case_ids):
        reference = sitk.ReadImage(str(dataset[case_id].label_path))
        labels = sitk.GetArrayFromImage(reference)
        if i % 2:
            kept = ndimage.binary_erosion(labels == 2)
            labels = np.where((labels == 2) & ~kept, 1, labels).astype(np.uint8)
        image = sitk.GetImageFromArray(labels.astype(np.uint8))
        image.CopyInformation(reference)
        sitk.WriteImage(image, str(dest / f"{case_id}.nii.gz"))
    for name in NNUNET_FILES:
        (dest / name).write_text(json.dumps({"written_by": "nnUNetv2_predict"}))
    return dest


def test_outside_predictions_become_a_run_the_leaderboard_ranks(tiny_dataset, tmp_path, capsys, monkeypatch):
    from mlflow import MlflowClient

    from avnbench.data.splits import read_splits
    from avnbench.reporting.tracking import FOLD_TAG, PARENT_TAG
    from avnbench.runner import run_benchmark

    folds, split_meta = read_splits(tiny_dataset)
    pred = nnunet_folder(tiny_dataset, folds[0].val + folds[1].val[:1], tmp_path / "nnunet_pred")
    (pred / "other_site_017.nii.gz").write_bytes(b"not a case of this dataset, never read")
    before = sorted(p.name for p in pred.iterdir())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_benchmark("threshold-baseline", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0],
                  tracking_uri=uri, n_bootstrap=10)
    monkeypatch.chdir(tmp_path)
    args = ["score", "--pred", str(pred), "--ref", str(tiny_dataset.root), "--name", "outside-net",
            "--fold", "0", "--tracking-uri", uri, "--bootstrap", "20"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "logged to MLflow as method 'outside-net'" in out
    assert "1 label map(s)" in out and "other_site_017.nii.gz" in out
    assert sorted(p.name for p in pred.iterdir()) == before, "nothing is written into the prediction folder"
    scores = tmp_path / "scores" / "outside-net"
    assert list(pd.read_csv(scores / "scores.csv")["case_id"]) == folds[0].val

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tiny_dataset.name)
    runs = client.search_runs([exp.experiment_id], filter_string="params.method = 'outside-net'")
    (parent,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    (child,) = [r for r in runs if PARENT_TAG in r.data.tags]
    params, tags = parent.data.params, parent.data.tags
    assert (params["preset"], params["folds"]) == ("external", "0")
    assert params["dataset_fingerprint"] == tiny_dataset.fingerprint and params["split_sha256"] == split_meta.sha256
    assert tags["avnbench.source"] == "external" and tags["avnbench.predictions"] == str(pred.resolve())
    assert "outside avnbench" in tags["mlflow.note.content"]
    assert parent.inputs.dataset_inputs[0].dataset.digest == tiny_dataset.fingerprint[:36]
    assert child.data.tags[FOLD_TAG] == "0" and child.info.status == "FINISHED"
    assert child.data.tags["synthetic"] == "true" and "dice_necrosis" in child.data.metrics
    assert "fit_seconds" not in parent.data.metrics, "avnbench did not time the outside method"
    plots = [a.path for a in client.list_artifacts(parent.info.run_id, "plots")]
    assert any("overlay_worst_" in p for p in plots) and any("overlay_best_" in p for p in plots)

    # the same label maps again: the run is in MLflow already, no second parent
    code, out, err = run_cli(args + ["--force"], capsys)
    assert code == 0, err
    assert "already in MLflow (same label maps, dataset and split)" in out
    runs_after = client.search_runs([exp.experiment_id], filter_string="params.method = 'outside-net'")
    assert sorted(r.info.run_id for r in runs_after) == sorted(r.info.run_id for r in runs)

    code, out, err = run_cli(["leaderboard", "--tracking-uri", uri, "--out", str(tmp_path / "boards")], capsys)
    assert code == 0, err
    (csv,) = (tmp_path / "boards").rglob("leaderboard.csv")
    board = pd.read_csv(csv)
    assert {"outside-net", "threshold-baseline"} <= set(board["method"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--name", "threshold-baseline"], "is a registered method; name the outside predictions differently"),
        (["--name", "bad name!"], "use letters, digits and . _ + -"),
        (["--name", "net", "--case", "avn_000"], "--case cannot be combined with --name or --fold"),
        (["--tracking-uri", "sqlite:///x.db"], "needs its method name: pass --name"),
        (["--name", "net", "--fold", "a"], "--fold takes fold numbers"),
        (["--name", "net", "--fold", "9"], "has folds 0..3"),
        (["--name", "net"], "validation cases (missing"),  # fold 1 has one of its cases only
    ],
    ids=["builtin-name", "bad-name", "case-and-name", "uri-without-name", "fold-not-a-number", "no-such-fold",
         "incomplete-fold"],
)
def test_outside_predictions_refused_with_one_line(extra, message, tiny_dataset, tmp_path, capsys, monkeypatch):
    from avnbench.data.splits import read_splits

    folds, _ = read_splits(tiny_dataset)
    pred = nnunet_folder(tiny_dataset, folds[0].val + folds[1].val[:1], tmp_path / "pred")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["score", "--pred", str(pred), "--ref", str(tiny_dataset.root), "--bootstrap", "0", *extra]
    if "--tracking-uri" not in extra:
        args += ["--tracking-uri", uri] if "--name" in extra else []
    code, _, err = run_cli(args, capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "scores").exists() and not (tmp_path / "mlflow.db").exists()


def test_fold_without_name_scores_that_folds_cases_only_and_logs_nothing(tiny_dataset, tmp_path, capsys,
                                                                         monkeypatch):
    from avnbench.data.splits import read_splits

    folds, _ = read_splits(tiny_dataset)
    pred = nnunet_folder(tiny_dataset, folds[2].val + folds[3].val[:1], tmp_path / "pred")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, _, err = run_cli(["score", "--pred", str(pred), "--ref", str(tiny_dataset.root), "--fold", "2",
                            "--bootstrap", "0", "--no-plots"], capsys)
    assert code == 0, err
    assert list(pd.read_csv(tmp_path / "scores" / "pred" / "scores.csv")["case_id"]) == folds[2].val
    assert not (tmp_path / "mlflow.db").exists()
