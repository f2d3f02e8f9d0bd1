"""nnU-Net v2 (2d, 3d_fullres and their softmax ensemble) as avnbench methods.

The seed study (Ruckli et al., seeds 000/001) trained nnU-Net's 2D and 3D U-Nets with nnU-Net's
defaults on 80x160x160 crops and reported the ensemble of both as best. Here nnU-Net itself does
all of it: fingerprint, planning, preprocessing, training (``nnUNetTrainerAvnbench``, a trainer
subclass whose only changes are the schedule and the split) and prediction (``nnUNetPredictor``,
which resamples back to the original image grid). See ``workspace.py`` for where things live.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.api import (
    Case,
    Fold,
    JobContext,
    JobResources,
    Method,
    MethodCard,
    MethodConfig,
    PredictCase,
    PrepareContext,
    SegmentationPrediction,
    load_dataset,
    split_hash,
)
from avnbench.training import NotFittedError, cpu_threads, require_fitted

from avnbench_nnunet import _jobs
from avnbench_nnunet.members import MemberSoftmax, file_sha256
from avnbench_nnunet.postprocessing import Postprocessing, apply_postprocessing, determine_postprocessing
from avnbench_nnunet.workspace import Workspace, code_versions, training_key

MODELS_FILE = "nnunet_models.json"
POSTPROCESSING_FILE = "nnunet_postprocessing.json"

CITATION = (
    "Ruckli A, Schmaranzer F, Lerch T, Boschung A, Steppacher S, Burger J, Tannast M, Siebenrock K, "
    "Gerber K, Gerber N. Deep learning for fully-automatic quantification of avascular necrosis of "
    "the femoral head on 3D hip MRI in young patients eligible for joint preserving hip surgery: "
    "a pilot study. University of Bern (sitem-insel / Inselspital), conference abstract and poster. "
    "Method: Isensee F, Jaeger PF, Kohl SAA, Petersen J, Maier-Hein KH. nnU-Net: a self-configuring "
    "method for deep learning-based biomedical image segmentation. Nature Methods 18(2):203-211, 2021."
)
REFERENCE = "https://doi.org/10.1038/s41592-020-01008-z"


class TrainerSchedule(BaseModel):
    """What ``nnUNetTrainerAvnbench`` changes relative to nnU-Net's default trainer."""

    model_config = ConfigDict(extra="forbid")

    num_epochs: int = Field(gt=0, description="training epochs (nnU-Net default 1000)")
    num_iterations_per_epoch: int = Field(gt=0, description="training batches per epoch (default 250)")
    num_val_iterations_per_epoch: int = Field(
        gt=0, description="batches per epoch for nnU-Net's pseudo Dice on the internal validation cases (default 50)"
    )
    batch_size: int | None = Field(
        default=None, gt=0, description="batch size; None = the one nnU-Net's planner chose"
    )
    save_every: int = Field(default=50, gt=0, description="epochs between checkpoint_latest saves (default 50)")
    plot_every: int = Field(
        default=1, gt=0, description="epochs between redraws of progress.png (default 1; the last epoch always redraws)"
    )
    initial_lr: float = Field(default=1e-2, gt=0, description="SGD learning rate at epoch 0, poly decay (default 0.01)")
    oversample_foreground_percent: float = Field(
        default=0.33, ge=0, le=1, description="share of each batch centred on foreground (default 0.33)"
    )
    base_features: int | None = Field(
        default=None, gt=0,
        description="features of the first stage, the others scaled alike; None = nnU-Net's plan (32)",
    )
    patch_size: list[int] | None = Field(default=None, description="patch size (z, y, x); None = nnU-Net's plan")
    cpu_bfloat16: bool = Field(
        default=False,
        description="on a CPU with native bfloat16 (AVX512-BF16 or AMX), forward passes in bfloat16 autocast "
                    "(nnU-Net's own autocast is CUDA-only); ignored elsewhere",
    )

    def trainer_settings(self) -> dict[str, Any]:
        """What ``nnUNetTrainerAvnbench`` reads from its job file."""
        return self.model_dump(exclude={"base_features", "patch_size"})


def _schedule(epochs: int, iterations: int, val_iterations: int, save_every: int | None = None,
              **changes: Any) -> dict[str, Any]:
    return TrainerSchedule(
        num_epochs=epochs, num_iterations_per_epoch=iterations,
        num_val_iterations_per_epoch=val_iterations, save_every=save_every or epochs, **changes,
    ).model_dump()


# The CPU presets shorten the schedule and use a narrower network (and, for 3d, a smaller patch and
# batch) through nnU-Net's plans-variant mechanism; the code path is nnU-Net's. Half of each batch is
# centred on foreground (default a third) so that a short schedule sees the lesion often enough;
# smoke's few iterations use twice nnU-Net's learning rate. Measured on the 24-case phantom (see
# README): 2d learns the necrosis after ~500 iterations and is good after ~1500 (quick: 1600).
# quick's 3d patch spans the CPU phantom's 40 slices nearly whole (32 of them): with 24x48x48 it
# took neck and pelvis for head and learnt no necrosis in 800 iterations (v2 phantom, fold 1: Dice
# vital 0.67 against 0.81 at 32x48x48, necrosis 0.00 against 0.19; benchmarks/README.md).
# The CPU 3d schedules convolve in bfloat16 where the CPU has it natively (cpu_bfloat16): a quick
# fold trained in ~195 s instead of ~245 s, Dice vital 0.777 against 0.779 over the 24 hips; the
# 2d network gained nothing (session 9, benchmarks/README.md).
_CPU = {"oversample_foreground_percent": 0.5}
SCHEDULES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {"2d": _schedule(2, 3, 1, batch_size=4, base_features=8, initial_lr=0.02, plot_every=2, **_CPU),
              "3d_fullres": _schedule(2, 2, 1, batch_size=1, base_features=4, patch_size=[24, 48, 48],
                                      initial_lr=0.02, plot_every=2, cpu_bfloat16=True, **_CPU)},
    "quick": {"2d": _schedule(32, 50, 2, batch_size=4, base_features=8, plot_every=32, **_CPU),
              "3d_fullres": _schedule(20, 40, 1, batch_size=2, base_features=8, patch_size=[32, 48, 48],
                                      plot_every=20, cpu_bfloat16=True, **_CPU)},
    "paper": {"2d": _schedule(1000, 250, 50, save_every=50), "3d_fullres": _schedule(1000, 250, 50, save_every=50)},
}
# Test-time mirroring off and non-overlapping tiles on a CPU (nnU-Net's -disable_tta, -step_size 1).
CPU_RUNTIME = {"use_mirroring": False, "tile_step_size": 1.0}
PAPER_RUNTIME = {"use_mirroring": True, "tile_step_size": 0.5}


class NnunetConfig(MethodConfig):
    """Settings shared by the three nnU-Net methods (members are trained with the same ones)."""

    trainer_2d: TrainerSchedule = Field(
        default_factory=lambda: TrainerSchedule(**SCHEDULES["quick"]["2d"]),
        description="training schedule of the 2d configuration",
    )
    trainer_3d: TrainerSchedule = Field(
        default_factory=lambda: TrainerSchedule(**SCHEDULES["quick"]["3d_fullres"]),
        description="training schedule of the 3d_fullres configuration",
    )
    use_mirroring: bool = Field(
        default=False, description="test-time mirroring (nnU-Net default on; off for the CPU presets)"
    )
    tile_step_size: float = Field(
        default=0.5, gt=0, le=1, description="sliding-window step as a fraction of the patch (nnU-Net default 0.5)"
    )
    data_augmentation_processes: int | None = Field(
        default=None, ge=0,
        description="nnU-Net's data augmentation workers (nnUNet_n_proc_DA); None = 1 worker beside "
        "the training process on a multi-core CPU (0 on one core), min(12, cores - 1) on a GPU; the "
        "environment variable wins",
    )
    preprocessing_processes: int = Field(
        default=2, gt=0, description="processes for nnU-Net's fingerprint extraction and preprocessing"
    )
    cpu_threads: int | None = Field(
        default=None, gt=0,
        description="torch threads for CPU training and prediction; None = cores - 1 (one core is "
        "left to the data augmentation worker)",
    )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        name: {"trainer_2d": s["2d"], "trainer_3d": s["3d_fullres"],
               **(PAPER_RUNTIME if name == "paper" else CPU_RUNTIME)}
        for name, s in SCHEDULES.items()
    }

    def schedule(self, configuration: str) -> TrainerSchedule:
        return self.trainer_2d if configuration == "2d" else self.trainer_3d


class _NnunetMethod(Method):
    """Fit = make sure nnU-Net's members of this method are trained; predict = average them."""

    Config = NnunetConfig
    MEMBERS: ClassVar[tuple[str, ...]]

    # --- planning -------------------------------------------------------------------------
    @classmethod
    def resources(cls, preset: str, device: str, config: MethodConfig | None = None) -> JobResources:
        """The cores nnU-Net keeps busy (the network's threads on a CPU plus its augmentation
        workers, as ``_cpu_threads`` and ``_n_proc_da`` choose them here) and one GPU on ``cuda``,
        where at most 4 cores are asked for so that a node's GPUs are not left idle for want of
        cores (``data_augmentation_processes`` sets the workers)."""
        config = config if config is not None else cls.Config.preset(preset)
        workers = _n_proc_da(config, device)
        if device == "cuda":
            return JobResources(num_cpus=max(1, min(workers, 4)), num_gpus=1, memory_mb=12288)
        return JobResources(num_cpus=_cpu_threads(config) + workers, num_gpus=0, memory_mb=3072)

    @classmethod
    def prepare(cls, context: PrepareContext, config: MethodConfig, device: str) -> None:
        """nnU-Net's fingerprint, plans and preprocessing, once per dataset, before any fold
        starts (the three methods share this step; ``fit`` finds it done)."""
        ws = Workspace.create(context.shared_dir, context.dataset_fingerprint, "prepare")
        env = ws.environment(device, _n_proc_da(config, device), config.preprocessing_processes)
        ws.ensure_preprocessed(context.dataset_dir, context.splits_file, env, config.preprocessing_processes)

    # --- fit ------------------------------------------------------------------------------
    def fit(self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str) -> None:
        """Train (or reuse) nnU-Net's members on ``train_cases``; ``val_cases`` feed nnU-Net's
        per-epoch pseudo Dice (``checkpoint_final`` is used, no checkpoint is selected on them)
        and nnU-Net's choice of postprocessing (:mod:`avnbench_nnunet.postprocessing`)."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        context = self.context or _context_without_runner(train_cases, val_cases, workdir, self.config)
        config: NnunetConfig = self.config  # type: ignore[assignment]
        members = []
        for configuration in self.MEMBERS:
            schedule = config.schedule(configuration)
            preset_schedule = SCHEDULES.get(context.preset, {}).get(configuration)
            ws = Workspace.create(
                context.shared_dir, context.dataset_fingerprint,
                training_key(context.preset, context.split_hash, config.seed,
                             schedule.model_dump() == preset_schedule, schedule.model_dump(),
                             # installed versions plus the runner's (avnbench's git commit too)
                             versions={**code_versions(), **context.code}),
            )
            env = ws.environment(device, _n_proc_da(config, device), config.preprocessing_processes)
            ws.ensure_preprocessed(context.dataset_dir, context.splits_file, env, config.preprocessing_processes)
            nnunet_configuration = ws.ensure_configuration(configuration, schedule.base_features, schedule.patch_size)
            trained_now = ws.ensure_trained(
                nnunet_configuration, context.fold, schedule.trainer_settings(),
                [c.case_id for c in train_cases], [c.case_id for c in val_cases],
                device, config.seed, _cpu_threads(config), env,
                on_epoch=self._epoch_reporter(configuration),
            )
            folder = ws.member_folder(nnunet_configuration, context.fold)
            members.append({
                "configuration": configuration,
                "nnunet_configuration": nnunet_configuration,
                # relative, so that moving the whole work folder keeps the job usable
                "folder": os.path.relpath(folder, workdir.resolve()),
                "trained_now": trained_now,
            })
            self._record_member(configuration, folder, trained_now)
        (workdir / MODELS_FILE).write_text(json.dumps({"method": self.card.name, "members": members}, indent=2))
        self._decide_postprocessing(val_cases, workdir, device)

    def _decide_postprocessing(self, val_cases: Sequence[Case], workdir: Path, device: str) -> None:
        """nnU-Net's postprocessing for this method, chosen on its predictions of ``val_cases``
        (none without them), to ``POSTPROCESSING_FILE``."""
        ids, predicted, references = [], [], []
        for case, probabilities in self._probabilities(val_cases, workdir, device):
            ids.append(case.case_id)
            predicted.append(np.argmax(probabilities, axis=0).astype(np.uint8))
            references.append(case.label_array())
        decision = determine_postprocessing(ids, predicted, references)
        (workdir / POSTPROCESSING_FILE).write_text(decision.model_dump_json(indent=2) + "\n")
        if self.log:
            self.log.param("postprocessing", decision.describe())

    def _tag(self, configuration: str) -> str:
        """Prefix of a member's values in the fold's run ('' for a single member)."""
        return "" if len(self.MEMBERS) == 1 else ("2d_" if configuration == "2d" else "3d_")

    def _epoch_reporter(self, configuration: str):
        """The callback reporting each epoch nnU-Net finishes, while it trains, as the fold's
        epoch i/N with its losses and pseudo Dice."""
        if self.log is None:
            return None
        log, tag = self.log, self._tag(configuration)

        def report(record: dict[str, Any]) -> None:
            values = {f"{tag}{k}": v for k, v in record.items() if k not in ("epoch", "total")}
            log.epoch(int(record["epoch"]), int(record["total"]), **values)

        return report

    def _record_member(self, configuration: str, folder: Path, trained_now: bool) -> None:
        """nnU-Net's log and progress plot to the fold's run, and a reused member's curves
        (a member trained now reported its epochs while it trained)."""
        if self.log is None:
            return
        tag = self._tag(configuration)
        self.log.param(f"{tag}trained_now", trained_now)
        self.log.param(f"{tag}nnunet_model_folder", str(folder))
        model = json.loads((folder / _jobs.MODEL_FILE).read_text())
        self.log.param(f"{tag}patch_size", model["patch_size"])
        self.log.param(f"{tag}batch_size", model["batch_size"])
        self.log.param(f"{tag}bfloat16", bool(model.get("cpu_bfloat16", False)))
        if not trained_now:
            curves = json.loads((folder / _jobs.CURVES_FILE).read_text())
            names = {"train_losses": "train_loss", "val_losses": "val_loss", "mean_fg_dice": "pseudo_dice",
                     "ema_fg_dice": "pseudo_dice_ema", "lrs": "lr", "epoch_seconds": "epoch_seconds"}
            for key, name in names.items():
                for epoch, value in enumerate(curves.get(key, []), start=1):
                    self.log.metric(f"{tag}{name}", value, step=epoch)
        subdir = f"nnunet_{configuration}"
        for source in sorted(folder.glob("training_log_*.txt")) + [folder / "progress.png"]:
            if source.is_file():
                shutil.copyfile(source, self.log.artifact(f"{subdir}/{source.name}"))

    # --- predict --------------------------------------------------------------------------
    def predict(self, cases: Sequence[PredictCase], workdir: Path, device: str) -> Iterator[SegmentationPrediction]:
        """Softmax of each member on the original image grid, averaged (one member: itself);
        labels = its argmax with the postprocessing ``fit`` chose."""
        (pp_path,) = require_fitted(self.card.name, Path(workdir), POSTPROCESSING_FILE)
        postprocessing = Postprocessing.model_validate_json(pp_path.read_text())
        for case, probabilities in self._probabilities(cases, workdir, device):
            labels = apply_postprocessing(np.argmax(probabilities, axis=0).astype(np.uint8), postprocessing)
            yield SegmentationPrediction(case_id=case.case_id, labels=labels, probabilities=probabilities)

    def _probabilities(self, cases: Sequence[Case | PredictCase], workdir: Path, device: str):
        """(case, averaged softmax (classes, z, y, x) float32) for each case, in order; a member's
        softmax another job of this fold already computed is read back (:mod:`.members`)."""
        (models_path,) = require_fitted(self.card.name, Path(workdir), MODELS_FILE)
        members = json.loads(models_path.read_text())["members"]
        if not cases:
            return
        config: NnunetConfig = self.config  # type: ignore[assignment]
        settings = {"tile_step_size": config.tile_step_size, "use_mirroring": config.use_mirroring,
                    "device": device}
        softmaxes = []
        for m in members:
            folder = (Path(workdir).resolve() / m["folder"]).resolve()
            weights = folder / _jobs.WEIGHTS_FILE
            if not weights.is_file():
                raise NotFittedError(f"{weights}: missing; the nnU-Net model was not trained to the end, run fit again")
            softmaxes.append(MemberSoftmax(folder, weights, settings,
                                           load=lambda folder=folder: _load_predictor(folder, device, config)))
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

        def during_prediction():
            return cpu_threads(_cpu_threads(config) if device == "cpu" else None)

        for case in cases:
            image_sha256 = file_sha256(Path(case.image_path))
            # read once per case, and only if a member has to predict it
            read_image = functools.cache(lambda path=str(case.image_path): SimpleITKIO().read_images([path]))
            probabilities = None
            for member in softmaxes:
                with _quiet():
                    p = member.softmax(case.case_id, image_sha256, read_image, during_prediction)
                probabilities = p.copy() if probabilities is None else probabilities + p
            probabilities /= len(softmaxes)
            yield case, probabilities


def _load_predictor(folder: Path, device: str, config: NnunetConfig):
    """nnU-Net's predictor for one trained fold, weights loaded with ``weights_only=True``."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    weights = folder / _jobs.WEIGHTS_FILE  # checked by the caller (_probabilities)
    model = json.loads((folder / _jobs.MODEL_FILE).read_text())
    plans_manager = PlansManager(load_json(str(folder.parent / "plans.json")))
    dataset_json = load_json(str(folder.parent / "dataset.json"))
    configuration_manager = plans_manager.get_configuration(model["configuration"])
    # What nnUNetTrainer.build_network_architecture does (nnUNetTrainerAvnbench keeps it); called
    # directly because importing the trainer module drags in matplotlib and its $HOME caches.
    network = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        allow_init=True,
        deep_supervision=False,
    )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    torch_device = torch.device(device)
    predictor = nnUNetPredictor(
        tile_step_size=config.tile_step_size, use_gaussian=True, use_mirroring=config.use_mirroring,
        perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
        verbose=False, verbose_preprocessing=False, allow_tqdm=False,
    )
    axes = model["inference_allowed_mirroring_axes"]
    predictor.manual_initialization(network, plans_manager, configuration_manager, [state], dataset_json,
                                    model["trainer_name"], tuple(axes) if axes is not None else None)
    return predictor


@contextlib.contextmanager
def _quiet():
    """nnU-Net prints progress notes; the core does not print, so keep them off stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _n_proc_da(config: NnunetConfig, device: str) -> int:
    if config.data_augmentation_processes is not None:
        return config.data_augmentation_processes
    cores = os.cpu_count() or 2
    # On a CPU the network gets cpu_threads cores and augmentation one worker beside it.
    return (1 if cores > 1 else 0) if device == "cpu" else max(1, min(12, cores - 1))


def _cpu_threads(config: NnunetConfig) -> int:
    if config.cpu_threads is not None:
        return config.cpu_threads
    # One core for the network, the rest for data augmentation: more torch threads than free
    # cores make convolutions many times slower (OpenMP threads wait on each other).
    return max(1, (os.cpu_count() or 2) - 1)


def _context_without_runner(train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path,
                            config: MethodConfig) -> JobContext:
    """A job context for direct (non-runner) use: the cases' dataset, the fold they form."""
    dataset = load_dataset(Path(train_cases[0].image_path).parent.parent)
    fit_ids = {c.case_id for c in [*train_cases, *val_cases]}
    splits_file, fold = None, 0
    if dataset.splits_path.is_file():
        folds = [Fold.model_validate(f) for f in json.loads(dataset.splits_path.read_text())]
        matching = [k for k, f in enumerate(folds) if set(f.train) == fit_ids]
        if matching:
            splits_file, fold = dataset.splits_path, matching[0]
    if splits_file is None:
        folds = [Fold(train=sorted(fit_ids), val=sorted({c.case_id for c in dataset.cases} - fit_ids))]
        splits_file = workdir / "nnunet_split.json"
        splits_file.write_text(json.dumps([f.model_dump() for f in folds], indent=2))
    preset = next(
        (name for name in type(config).PRESETS if type(config).preset(name, seed=config.seed) == config), "custom"
    )
    return JobContext(
        dataset_dir=dataset.root, dataset_name=dataset.name, dataset_fingerprint=dataset.fingerprint,
        splits_file=splits_file, split_hash=split_hash(folds), fold=fold, preset=preset,
        seed=config.seed, shared_dir=workdir / "shared",
    )


class NnunetTwoD(_NnunetMethod):
    card = MethodCard(
        name="nnunet-2d", task="segmentation",
        description="nnU-Net v2 '2d' configuration (slice-wise U-Net planned by nnU-Net), trained with "
        "nnU-Net's own pipeline, as one member of the seed study's ensemble",
        citation=CITATION, reference=REFERENCE,
    )
    MEMBERS = ("2d",)


class NnunetThreeD(_NnunetMethod):
    card = MethodCard(
        name="nnunet-3d", task="segmentation",
        description="nnU-Net v2 '3d_fullres' configuration (3D U-Net planned by nnU-Net), trained with "
        "nnU-Net's own pipeline, as one member of the seed study's ensemble",
        citation=CITATION, reference=REFERENCE,
    )
    MEMBERS = ("3d_fullres",)


class NnunetEnsemble(_NnunetMethod):
    card = MethodCard(
        name="nnunet-ensemble", task="segmentation",
        description="softmax average of nnU-Net v2 '2d' and '3d_fullres' (the seed study's best "
        "configuration); reuses members already trained for the same dataset, split, fold and preset",
        citation=CITATION, reference=REFERENCE, builds_on=("nnunet-2d", "nnunet-3d"),
    )
    MEMBERS = ("2d", "3d_fullres")
