"""nnU-Net plugin: conformance of all three methods on one shared work folder (smoke preset),
reuse of trained members by the ensemble, and where nnU-Net's files go."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avnbench.api import ConfigError, PredictCase, read_splits
from avnbench.testing import check_method, job_dir_for
from avnbench.training import NotFittedError

from avnbench_nnunet import _jobs
from avnbench_nnunet.method import (
    MODELS_FILE,
    POSTPROCESSING_FILE,
    NnunetConfig,
    NnunetEnsemble,
    NnunetThreeD,
    NnunetTwoD,
)
from avnbench_nnunet.members import PROBABILITIES_DIR
from avnbench_nnunet.postprocessing import Postprocessing, apply_postprocessing
from avnbench_nnunet.workspace import JOB_FILE, TRAINER_FOLDER

METHODS = (NnunetTwoD, NnunetThreeD, NnunetEnsemble)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """nnunet-2d, nnunet-3d, then nnunet-ensemble on fold 0 of one work folder, run with an
    empty $HOME and an empty working directory so that stray writes would show."""
    root = tmp_path_factory.mktemp("nnunet")
    workdir, home, cwd = root / "work", root / "home", root / "cwd"
    home.mkdir()
    cwd.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(home))
    mp.chdir(cwd)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        mp.delenv(var, raising=False)
    try:
        predictions, members, mtimes, postprocessing = {}, {}, {}, {}
        for cls in METHODS:
            name = cls.card.name
            if cls is NnunetEnsemble:  # what the ensemble must leave alone
                mtimes = _member_mtimes(members)
            predictions[name] = check_method(cls, tiny_dataset, workdir, preset="smoke")
            job_dir = job_dir_for(workdir, tiny_dataset.name, name, "smoke", 0)
            members[name] = json.loads((job_dir / MODELS_FILE).read_text())["members"]
            postprocessing[name] = Postprocessing.model_validate_json((job_dir / POSTPROCESSING_FILE).read_text())
            for member in members[name]:
                member["folder"] = str((job_dir.resolve() / member["folder"]).resolve())
    finally:
        mp.undo()
    return {"workdir": workdir, "home": home, "cwd": cwd, "predictions": predictions,
            "members": members, "mtimes_before_ensemble": mtimes, "dataset": tiny_dataset,
            "postprocessing": postprocessing}


def _member_mtimes(members: dict) -> dict[str, int]:
    files = {}
    for name in ("nnunet-2d", "nnunet-3d"):
        folder = Path(members[name][0]["folder"])
        for f in ("checkpoint_final.pth", _jobs.WEIGHTS_FILE, _jobs.MODEL_FILE):
            files[str(folder / f)] = (folder / f).stat().st_mtime_ns
    return files


def test_members_trained_and_ensemble_reuses_them(trained):
    members = trained["members"]
    assert [m["trained_now"] for m in members["nnunet-2d"]] == [True]
    assert [m["trained_now"] for m in members["nnunet-3d"]] == [True]
    ensemble = members["nnunet-ensemble"]
    assert [m["folder"] for m in ensemble] == [members["nnunet-2d"][0]["folder"], members["nnunet-3d"][0]["folder"]]
    assert [m["trained_now"] for m in ensemble] == [False, False]
    assert _member_mtimes(members) == trained["mtimes_before_ensemble"]


def test_ensemble_is_the_softmax_average_of_its_members(trained):
    """Probabilities: the members' mean; labels: its argmax with the ensemble's own postprocessing."""
    p, decision = trained["predictions"], trained["postprocessing"]["nnunet-ensemble"]
    for two_d, three_d, ens in zip(p["nnunet-2d"], p["nnunet-3d"], p["nnunet-ensemble"]):
        mean = (two_d.probabilities + three_d.probabilities) / 2
        np.testing.assert_allclose(ens.probabilities, mean, atol=1e-5)
        expected = apply_postprocessing(np.argmax(mean, axis=0).astype(np.uint8), decision)
        np.testing.assert_array_equal(ens.labels, expected)
        assert ens.probabilities.dtype == np.float32


def test_nnunet_folders_live_in_the_work_folder_and_nothing_leaks_out(trained):
    workdir, dataset = trained["workdir"].resolve(), trained["dataset"]
    assert list(trained["home"].iterdir()) == []
    assert list(trained["cwd"].iterdir()) == []
    folder = Path(trained["members"]["nnunet-2d"][0]["folder"])
    assert workdir in folder.parents
    nnunet_root = next(workdir.rglob("nnUNet_preprocessed"))
    (pre_dataset,) = [d for d in nnunet_root.iterdir() if d.is_dir()]
    # the benchmark's split is nnU-Net's split, so nnU-Net's fold k is the benchmark's fold k
    assert (pre_dataset / "splits_final.json").read_bytes() == dataset.splits_path.read_bytes()
    raw_images = list((nnunet_root.parent / "nnUNet_raw").rglob("*_0000.nii.gz"))
    assert len(raw_images) == len(dataset.cases) and all(p.is_symlink() for p in raw_images)
    # preprocessing ran once for all three methods and both configurations
    assert len(list(nnunet_root.parent.joinpath("logs").glob("preprocess.log"))) == 1


def test_trainer_never_sees_the_folds_validation_cases(trained):
    folds, _ = read_splits(trained["dataset"])
    for member in trained["members"]["nnunet-ensemble"]:
        job = json.loads((Path(member["folder"]) / JOB_FILE).read_text())
        assert set(job["train"]) | set(job["val"]) <= set(folds[0].train)
        assert not set(job["train"]) & set(job["val"])
        smoke = NnunetConfig.preset("smoke").schedule(member["configuration"])
        assert job["num_epochs"] == smoke.num_epochs
        assert job["num_iterations_per_epoch"] == smoke.num_iterations_per_epoch
    assert not (Path(trained["members"]["nnunet-2d"][0]["folder"]) / "checkpoint_best.pth").exists()


def test_training_log_and_curves_reach_the_folds_run(trained):
    job_dir = job_dir_for(trained["workdir"], trained["dataset"].name, "nnunet-3d", "smoke", 0)
    artifacts = {p.name for p in (job_dir / "artifacts").rglob("*") if p.is_file()}
    # smoke skips the first epoch's redraw (plot_every=2); the last epoch always draws the plot
    assert NnunetConfig.preset("smoke").trainer_3d.plot_every == 2
    assert "progress.png" in artifacts and any(a.startswith("training_log_") for a in artifacts)
    curves = [json.loads(line) for line in (job_dir / "training_log.jsonl").read_text().splitlines()]
    smoke_epochs = NnunetConfig.preset("smoke").trainer_3d.num_epochs
    # every epoch reported once, 1-based, with nnU-Net's losses and pseudo Dice
    for name in ("train_loss", "val_loss", "pseudo_dice"):
        assert [c["step"] for c in curves if c["name"] == name] == list(range(1, smoke_epochs + 1))
    # the ensemble reused its members: their curves, prefixed, replayed from nnU-Net's log
    ensemble_dir = job_dir_for(trained["workdir"], trained["dataset"].name, "nnunet-ensemble", "smoke", 0)
    names = {json.loads(line)["name"] for line in (ensemble_dir / "training_log.jsonl").read_text().splitlines()}
    assert {"2d_train_loss", "3d_train_loss"} <= names


def test_trainer_writes_one_epoch_line_per_epoch(trained):
    folder = Path(trained["members"]["nnunet-2d"][0]["folder"])
    lines = [json.loads(line) for line in (folder / "avnbench_epochs.jsonl").read_text().splitlines()]
    total = NnunetConfig.preset("smoke").trainer_2d.num_epochs
    assert [(r["epoch"], r["total"]) for r in lines] == [(k, total) for k in range(1, total + 1)]
    assert all(np.isfinite(r["train_loss"]) and r["epoch_seconds"] > 0 for r in lines)


def test_epoch_tail_hands_over_complete_lines_once(tmp_path):
    from avnbench_nnunet.workspace import EpochTail

    path, seen = tmp_path / "epochs.jsonl", []
    tail = EpochTail(path, seen.append)
    tail()  # no file yet
    path.write_text('{"epoch": 1}\n{"epo')
    tail()
    assert seen == [{"epoch": 1}]
    with open(path, "a") as f:
        f.write('ch": 2}\n')
    tail()
    tail()
    assert seen == [{"epoch": 1}, {"epoch": 2}]


def test_predict_without_fit_says_what_to_do(tmp_path, tiny_dataset):
    sealed = [PredictCase.of(tiny_dataset.cases[0], with_landmarks=NnunetTwoD.card.uses_landmarks)]
    with pytest.raises(NotFittedError, match="run fit first"):
        list(NnunetTwoD.from_preset("smoke").predict(sealed, tmp_path, "cpu"))


def test_nnunet_finds_the_trainer_through_nnUNet_extTrainer(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINER_FOLDER))
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer = recursive_find_trainer_class_by_name(_jobs.TRAINER_NAME)
    assert trainer.__name__ == _jobs.TRAINER_NAME and issubclass(trainer, nnUNetTrainer)


def test_paper_preset_is_nnunets_default_training():
    paper = NnunetConfig.preset("paper")
    for schedule in (paper.trainer_2d, paper.trainer_3d):
        assert (schedule.num_epochs, schedule.num_iterations_per_epoch, schedule.num_val_iterations_per_epoch) == (
            1000, 250, 50)
        assert schedule.batch_size is None and schedule.base_features is None and schedule.patch_size is None
        assert (schedule.initial_lr, schedule.oversample_foreground_percent) == (0.01, 0.33)
        assert schedule.plot_every == 1
    assert paper.use_mirroring and paper.tile_step_size == 0.5
    assert not NnunetConfig.preset("quick").use_mirroring


def test_registered_through_the_entry_point():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="avnbench") if e.name == "nnunet"]
    registered = []
    ep.load().avnbench_register_methods(registered.append)
    assert [m.card.name for m in registered] == ["nnunet-2d", "nnunet-3d", "nnunet-ensemble"]


def test_cpu_presets_are_plans_variants_of_nnunets_own_plan(trained):
    folder = Path(trained["members"]["nnunet-3d"][0]["folder"])
    smoke = NnunetConfig.preset("smoke").trainer_3d
    model = json.loads((folder / _jobs.MODEL_FILE).read_text())
    assert model["patch_size"] == smoke.patch_size and model["batch_size"] == smoke.batch_size
    plans = json.loads((folder.parent / "plans.json").read_text())["configurations"]
    derived = plans[model["configuration"]]
    assert derived["inherits_from"] == "3d_fullres"
    planned = plans["3d_fullres"]["architecture"]["arch_kwargs"]
    assert derived["architecture"]["arch_kwargs"]["features_per_stage"][0] == smoke.base_features
    assert derived["architecture"]["arch_kwargs"]["strides"] == planned["strides"]


def test_a_patch_that_does_not_fit_the_plan_is_a_config_error(trained):
    from avnbench_nnunet.workspace import Workspace

    dataset = trained["dataset"]
    shared = next(trained["workdir"].rglob("_shared"))
    ws = Workspace.create(shared, dataset.fingerprint, "unused")
    with pytest.raises(ConfigError, match="divisible"):
        ws.ensure_configuration("3d_fullres", None, [20, 48, 48])


def test_user_set_nnunet_folders_are_used_and_results_stay_keyed(monkeypatch, tmp_path):
    from avnbench_nnunet.workspace import Workspace, training_key

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    key = training_key("quick", "ab" * 32, seed=0, schedule_is_preset=True, schedule={})
    ws = Workspace.create(tmp_path / "shared", "f" * 64, key)
    assert (ws.raw, ws.preprocessed) == (tmp_path / "nnUNet_raw", tmp_path / "nnUNet_preprocessed")
    assert ws.results == tmp_path / "nnUNet_results" / key
    assert key.startswith("quick-splitabababababab-code")
    assert ws.dataset_name.startswith("Dataset9") and ws.dataset_name.endswith("_avnffffffff")
    assert "-seed3-custom" in training_key("quick", "ab" * 32, seed=3, schedule_is_preset=False, schedule={"a": 1})


@pytest.mark.parametrize("changed", ["avnbench", "avnbench-nnunet", "nnunetv2"])
def test_other_code_versions_train_anew(changed):
    from avnbench_nnunet.workspace import code_versions, training_key

    versions = code_versions()
    assert set(versions) == {"avnbench", "avnbench-nnunet", "nnunetv2"}
    same = training_key("quick", "ab" * 32, 0, True, {}, versions)
    assert same == training_key("quick", "ab" * 32, 0, True, {})
    other = training_key("quick", "ab" * 32, 0, True, {}, {**versions, changed: "99.0"})
    assert other != same


def test_epochs_are_reported_while_nnunet_trains(tiny_dataset, tmp_path, monkeypatch):
    import time

    from avnbench.api import TrainingLog

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    folds, _ = read_splits(tiny_dataset)
    train = tiny_dataset.subset(folds[0].train)
    arrivals = []
    method = NnunetTwoD.from_preset("smoke")
    method.log = TrainingLog(tmp_path, listener=lambda event: arrivals.append((time.time(), event)))
    method.fit(train[:-1], train[-1:], tmp_path, "cpu")
    member = json.loads((tmp_path / MODELS_FILE).read_text())["members"][0]
    exported = (tmp_path.resolve() / member["folder"]).resolve() / _jobs.MODEL_FILE  # written last
    epochs = [(t, e) for t, e in arrivals if e.total is not None]
    total = NnunetConfig.preset("smoke").trainer_2d.num_epochs
    assert [(e.epoch, e.total) for _, e in epochs] == [(k, total) for k in range(1, total + 1)]
    assert {"train_loss", "val_loss", "pseudo_dice"} <= set(epochs[0][1].values)
    # the first epoch arrived before nnU-Net's child process had finished and exported the model
    assert epochs[0][0] < exported.stat().st_mtime


def test_postprocessing_is_decided_on_internal_validation_cases_only(trained):
    folds, _ = read_splits(trained["dataset"])
    for name, decision in trained["postprocessing"].items():
        assert decision.cases, f"{name}: no internal validation case was predicted"
        assert set(decision.cases) <= set(folds[0].train), name
        assert not set(decision.cases) & set(folds[0].val), f"{name}: decided on the fold's test cases"


def _ensemble_predict(trained, cases):
    job_dir = job_dir_for(trained["workdir"], trained["dataset"].name, "nnunet-ensemble", "smoke", 0)
    sealed = [PredictCase.of(c, with_landmarks=False) if not isinstance(c, PredictCase) else c for c in cases]
    return list(NnunetEnsemble.from_preset("smoke").predict(sealed, job_dir, "cpu"))


def test_ensemble_reads_the_softmax_its_members_kept(trained, monkeypatch):
    """nnunet-2d and nnunet-3d kept each softmax beside their weights; the ensemble predicts the
    fold's cases again without loading a network, to the same numbers."""
    from avnbench_nnunet import method

    folds, _ = read_splits(trained["dataset"])
    for name in ("nnunet-2d", "nnunet-3d"):
        kept = {p.name.split("-")[0] for p in (Path(trained["members"][name][0]["folder"]) / PROBABILITIES_DIR).iterdir()}
        assert set(folds[0].val) <= kept, name

    def no_network(*args):
        raise AssertionError("a member was predicted again")

    monkeypatch.setattr(method, "_load_predictor", no_network)
    again = {p.case_id: p for p in _ensemble_predict(trained, trained["dataset"].subset(folds[0].val))}
    assert len(again) == len(trained["predictions"]["nnunet-ensemble"])
    for before in trained["predictions"]["nnunet-ensemble"]:
        now = again[before.case_id]
        np.testing.assert_array_equal(now.probabilities, before.probabilities)
        np.testing.assert_array_equal(now.labels, before.labels)


@pytest.mark.parametrize("change", ["image", "damaged kept file"])
def test_a_kept_softmax_is_used_only_for_the_same_image(trained, monkeypatch, tmp_path, change):
    import SimpleITK as sitk

    from avnbench_nnunet import method

    loaded = []
    real = method._load_predictor
    monkeypatch.setattr(method, "_load_predictor", lambda *a: loaded.append(a[0]) or real(*a))
    folds, _ = read_splits(trained["dataset"])
    case = trained["dataset"].subset(folds[0].val)[0]
    sealed = PredictCase.of(case, with_landmarks=False)
    if change == "image":
        image = sitk.ReadImage(str(case.image_path))
        array = sitk.GetArrayFromImage(image)
        array[array.shape[0] // 2] = array.max()  # one bright slice through the hip
        changed = sitk.GetImageFromArray(array)
        changed.CopyInformation(image)
        sitk.WriteImage(changed, str(tmp_path / "image.nii.gz"))
        sealed = sealed.model_copy(update={"image_path": tmp_path / "image.nii.gz"})
    else:
        for member in trained["members"]["nnunet-ensemble"]:
            for kept in (Path(member["folder"]) / PROBABILITIES_DIR).glob(f"{case.case_id}-*.npy"):
                kept.write_bytes(b"damaged")
    (now,) = _ensemble_predict(trained, [sealed])
    assert len(loaded) == 2  # both members predicted the case
    (before,) = [p for p in trained["predictions"]["nnunet-ensemble"] if p.case_id == case.case_id]
    if change == "image":
        assert not np.array_equal(now.probabilities, before.probabilities)
    else:
        np.testing.assert_array_equal(now.probabilities, before.probabilities)


def test_nnunets_loader_limits_threads_without_a_new_controller_per_batch(monkeypatch):
    """The trainer gives nnU-Net's data loader threadpoolctl's cached controller: the same
    one-thread limit around each batch, without walking the loaded libraries every time."""
    import threadpoolctl
    from nnunetv2.training.dataloading import data_loader

    from avnbench_nnunet.nnunet_trainers.nnUNetTrainerAvnbench import _limit_threads_with_one_controller

    monkeypatch.setattr(data_loader, "threadpool_limits", data_loader.threadpool_limits)  # restored after
    _limit_threads_with_one_controller()
    threadpoolctl.get_cached_controller()  # made once, before the batches
    made = []
    real_init = threadpoolctl.ThreadpoolController.__init__
    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "__init__",
                        lambda self: made.append(1) or real_init(self))
    for _ in range(3):
        with data_loader.threadpool_limits(limits=1, user_api=None):
            pass
    assert made == []
    with data_loader.threadpool_limits(limits=1, user_api=None):
        inside = threadpoolctl.threadpool_info()
    assert inside and all(lib["num_threads"] == 1 for lib in inside)


def test_bfloat16_forward_keeps_weights_outputs_and_state_dict_in_float32():
    """On a CPU with native bfloat16 the 3d trainer's network convolves in bfloat16 autocast;
    what nnU-Net's loss, checkpoints and exported weights see is unchanged."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from avnbench_nnunet.nnunet_trainers.nnUNetTrainerAvnbench import _forward_in_bfloat16

    torch.manual_seed(0)
    net = PlainConvUNet(1, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], 2, 3, [2, 2], True,
                        torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None,
                        torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=True)
    x = torch.randn(2, 1, 8, 16, 16)
    expected = [o.detach() for o in net(x)]
    keys = list(net.state_dict())
    params = list(net.parameters())
    _forward_in_bfloat16(net)
    out = net(x)
    assert list(net.state_dict()) == keys and list(net.parameters()) == params  # same objects
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert [o.dtype for o in out] == [torch.float32] * len(expected)
    for got, want in zip(out, expected):
        assert got.shape == want.shape
        assert not torch.equal(got, want)  # really computed in bfloat16 ...
        assert torch.allclose(got, want, atol=0.1, rtol=0.05)  # ... to bfloat16's precision
    sum(o.sum() for o in out).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)


def test_the_3d_member_trained_in_bfloat16_where_the_cpu_has_it(trained):
    from avnbench.training import native_bfloat16

    for name, expected in (("nnunet-3d", native_bfloat16()), ("nnunet-2d", False)):
        folder = Path(trained["members"][name][0]["folder"])
        assert json.loads((folder / _jobs.MODEL_FILE).read_text())["cpu_bfloat16"] is expected


def test_bfloat16_only_in_the_3d_cpu_schedules():
    for preset in ("smoke", "quick"):
        config = NnunetConfig.preset(preset)
        assert config.trainer_3d.cpu_bfloat16 and not config.trainer_2d.cpu_bfloat16
        assert config.trainer_3d.trainer_settings()["cpu_bfloat16"] is True
    paper = NnunetConfig.preset("paper")
    assert not paper.trainer_3d.cpu_bfloat16 and not paper.trainer_2d.cpu_bfloat16
