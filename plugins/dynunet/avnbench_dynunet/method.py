"""The ``dynunet`` method: MONAI's Dynamic U-Net (5 levels, deep supervision), after seed 002.

Uemura et al. (2025) segmented the femoral head and the necrotic lesion on 3D SPGR MRI with a
5-layer Dynamic U-Net and graded Steinberg A/B/C from the segmented volumes. This plugin trains
MONAI's ``DynUNet`` with an nnU-Net-style topology (:mod:`avnbench_dynunet.planner`), Dice +
cross-entropy with deep supervision, foreground/background-balanced random patches, flips and
intensity augmentation, and predicts by Gaussian-weighted sliding windows. The best checkpoint is
chosen by the mean Dice (vital, necrosis) on ``val_cases``, the validation part the core carves
out of the fold's training cases.

torch and MONAI are imported inside functions so that listing methods stays fast.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from avnbench.api import (
    Case, ConfigError, JobResources, Method, MethodCard, MethodConfig, PredictCase, SegmentationPrediction,
)
from avnbench.training import (
    Precision,
    TorchMethodConfig,
    channels_last,
    cpu_threads,
    endless,
    load_state,
    optimizer_step,
    precision,
    require_fitted,
    seed_everything,
    train_epochs,
)
from avnbench_dynunet.planner import Topology, plan_topology

LEVELS = 5
N_CLASSES = 3
MODEL_SUBDIR = "dynunet"
PLAN_FILE = "plan.json"
CHECKPOINT_FILE = "best.pt"
DATA_USAGE_FILE = "data_usage.json"


class DynUNetConfig(TorchMethodConfig):
    """Hyper-parameters of the Dynamic U-Net (defaults = the ``quick`` preset)."""

    # Torch's own thread setting, as before the shared toolkit: it keeps the seeded smoke and
    # quick numbers bit-identical (one thread changes the order of float reductions).
    cpu_threads: int | None = Field(
        default=None, gt=0, description="torch CPU threads during fit and predict (None: torch's setting)"
    )
    filters: tuple[int, int, int, int, int] | None = Field(
        default=(8, 16, 32, 64, 96),
        description="feature channels per resolution level (5 levels); None = MONAI's defaults "
        "(64, 96, 128, 192, 256)",
    )
    deep_supervision_heads: int = Field(
        default=2, ge=0, le=LEVELS - 2,
        description="extra lower-resolution outputs in the loss, weighted 1/2, 1/4, ...",
    )
    # quick: 32x64x64, foreground-balanced crops of the 40x80x80 CPU phantom (the whole image, with
    # no balanced crops, found no necrosis on any fold of the v2 phantom: Dice 0.00 against 0.26).
    patch_size: tuple[int, int, int] | None = Field(
        default=(32, 64, 64),
        description="training patch and sliding-window size in voxels (z, y, x), clipped to the "
        "median image size and rounded up to the network's divisor; None = the whole median image",
    )
    class_weights: tuple[float, float, float] | None = Field(
        default=None,
        description="loss weights of background, vital, necrosis (cross-entropy and Dice); "
        "None = equal",
    )
    # quick: 2. PyTorch runs a 3x3x3 convolution of a batch of one through its slow reference
    # kernel unless channels x depth x height exceed 20480, and through oneDNN for any larger
    # batch: a step of two 32x64x64 patches takes 0.39 s on one thread, one patch 0.92 s
    # (benchmarks/bench_patch_shapes.py). Measured on folds 0 and 4 of the v2 phantom, 250 steps
    # of two patches also learn the lesion where one patch did not (README, "Presets").
    batch_size: int = Field(default=2, ge=1, description="patches per training step")
    epochs: int = Field(default=25, ge=1, description="training epochs")
    iterations_per_epoch: int = Field(default=10, ge=1, description="training steps per epoch")
    # quick: the last epoch only. Its poly learning rate ends near 0 and the last epoch was the
    # best on all 5 folds of the v2 phantom when it was evaluated every 5 epochs; those 4 extra
    # sliding-window passes cost ~12 s per fold, 8 % of its fit (benchmarks/README.md).
    validate_every: int = Field(
        default=25, ge=1, description="epochs between evaluations on val_cases (and the last epoch)"
    )
    optimizer: Literal["sgd", "adamw"] = Field(
        default="adamw", description="SGD (Nesterov, momentum 0.99, as nnU-Net) or AdamW"
    )
    learning_rate: float = Field(default=3e-3, gt=0, description="initial learning rate")
    weight_decay: float = Field(default=3e-5, ge=0, description="weight decay")
    lr_decay_power: float = Field(
        default=0.9, ge=0, description="poly learning-rate decay per epoch: lr·(1 − epoch/epochs)^power"
    )
    flip_prob: float = Field(
        default=0.0, ge=0, le=1,
        description="probability of a flip per axis (0 in quick: too few steps to learn mirrored anatomy)",
    )
    intensity_aug_prob: float = Field(
        default=0.3, ge=0, le=1,
        description="probability of each intensity augmentation (scale ±10 %, shift ±0.1 SD, noise)",
    )
    # On by default: measured on one CPU thread (benchmarks/bench_patch_shapes.py
    # --channels-last), oneDNN runs these 3D convolutions in NDHWC without reordering each input
    # and output. Not measured on a GPU.
    channels_last: bool = Field(
        default=True,
        description="train and predict in channels-last (NDHWC) memory order: the same network, "
        "faster 3D convolutions on a CPU; float sums in another order",
    )
    # On by default: with native bfloat16 (the build machine has AVX512-BF16) a quick fold trained
    # in ~92 s instead of ~145 s (benchmarks/README.md); loss, weights and optimizer stay float32.
    cpu_bfloat16: bool = Field(
        default=True,
        description="bfloat16 autocast on a CPU that computes it natively (AVX512-BF16 or AMX; "
        "ignored elsewhere): faster 3D convolutions, weights stay float32",
    )
    sw_overlap: float = Field(default=0.25, ge=0, lt=1, description="sliding-window overlap fraction")
    sw_batch_size: int = Field(default=2, ge=1, description="windows per forward pass at inference")

    PRESETS = {
        "smoke": {
            "filters": (4, 8, 8, 16, 16),
            "deep_supervision_heads": 1,
            "patch_size": None,
            "batch_size": 1,
            "epochs": 2,
            "iterations_per_epoch": 2,
            "validate_every": 1,
            "flip_prob": 0.5,
        },
        "quick": {},
        "paper": {
            "filters": None,
            "deep_supervision_heads": 2,
            "patch_size": (80, 160, 160),
            "batch_size": 2,
            "epochs": 1000,
            "iterations_per_epoch": 250,
            "validate_every": 5,
            "flip_prob": 0.5,
            "optimizer": "sgd",
            "learning_rate": 1e-2,
            "sw_overlap": 0.5,
            "sw_batch_size": 4,
        },
    }

    @field_validator("patch_size")
    @classmethod
    def _positive_patch(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"patch_size must be positive voxels (z, y, x), got {value}")
        return value


class NetworkPlan(BaseModel):
    """Everything ``predict`` needs to rebuild the trained network (``workdir/dynunet/plan.json``)."""

    model_config = ConfigDict(extra="forbid")

    spacing_zyx: tuple[float, float, float]
    topology: Topology
    filters: tuple[int, ...] | None
    deep_supervision_heads: int
    best_epoch: int
    best_val_dice: float | None
    selection: Literal["val_cases", "last_epoch"]


class DataUsage(BaseModel):
    """Which cases fit actually touched (``workdir/dynunet/data_usage.json``), for leak audits."""

    model_config = ConfigDict(extra="forbid")

    train_cases: list[str] = Field(description="the train_cases fit was given")
    val_cases: list[str] = Field(description="the val_cases fit was given")
    training_batches: list[str] = Field(description="case ids that appeared in training batches")
    selection: list[str] = Field(description="case ids the checkpoint selection evaluated")


class DynUNetMethod(Method):
    """MONAI Dynamic U-Net segmenting vital (1) and necrotic (2) femoral head bone."""

    card = MethodCard(
        name="dynunet",
        task="segmentation",
        description="MONAI DynUNet, 5 resolution levels with nnU-Net-style spacing-derived kernels "
        "and strides, deep supervision, Dice+CE loss, balanced random patches, Gaussian sliding-"
        "window inference; Steinberg grade from the segmented volumes (seed 002).",
        citation="Uemura K, Takashima K, Otake Y, Li G, Mae H, Okada S, Hamada H, Sugano N. "
        "Development of a Deep Learning Model for the Volumetric Assessment of Osteonecrosis of "
        "the Femoral Head on Three-Dimensional Magnetic Resonance Imaging. J Arthroplasty. "
        "2025;40(10 Suppl 1):S160-S166.e1. doi:10.1016/j.arth.2025.05.126",
        reference="https://doi.org/10.1016/j.arth.2025.05.126",
    )
    Config = DynUNetConfig
    config: DynUNetConfig

    @classmethod
    def resources(cls, preset: str, device: str, config: MethodConfig | None = None) -> JobResources:
        """One core per torch thread (one when torch chooses), one GPU on ``cuda``, and host memory
        for the cached training cases and the network: 2 GiB on the CPU presets (a ``quick``
        fold job peaked near 2 GiB resident, MLflow and the driver included), 6 GiB for ``paper``
        (40 full-size cases cached, 80×160×160 patches)."""
        config = config if config is not None else cls.Config.preset(preset)
        threads = getattr(config, "cpu_threads", None) or 1
        memory = 6144 if preset == "paper" else 2048
        return JobResources(num_cpus=1 if device == "cuda" else threads, num_gpus=1 if device == "cuda" else 0,
                            memory_mb=memory)

    def fit(self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str) -> None:
        """Train on ``train_cases``; keep the checkpoint with the best mean Dice on ``val_cases``."""
        with cpu_threads(self.config.cpu_threads):
            self._fit(train_cases, val_cases, Path(workdir), device)

    def _fit(self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str) -> None:
        import torch
        from monai.data import CacheDataset, DataLoader
        from monai.losses import DeepSupervisionLoss, DiceCELoss

        if not train_cases:
            raise ConfigError("dynunet needs at least one training case")
        cfg = self.config
        model_dir = workdir / MODEL_SUBDIR
        model_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        prec = precision(device, cfg.amp, cfg.cpu_bfloat16)

        spacing = _median_spacing(train_cases)
        median_shape = [int(statistics.median(c.meta.geometry.shape_zyx[a] for c in train_cases)) for a in range(3)]
        wanted_patch = cfg.patch_size if cfg.patch_size is not None else median_shape
        patch = [min(p, s) for p, s in zip(wanted_patch, median_shape)]
        topology = plan_topology(spacing, patch, levels=LEVELS)
        if self.log:
            self.log.param("dynunet_patch_size_zyx", list(topology.patch_size))
            self.log.param("dynunet_kernel_sizes", [list(k) for k in topology.kernel_sizes])
            self.log.param("dynunet_strides", [list(s) for s in topology.strides])
            self.log.param("dynunet_spacing_zyx_mm", list(spacing))
            self.log.param("dynunet_bfloat16", prec.bfloat16)  # used on this machine, not only asked for

        train_ds = CacheDataset(
            [_case_item(c, with_label=True) for c in train_cases],
            transform=_training_transforms(topology.patch_size, cfg),
            cache_rate=1.0,
            num_workers=cfg.num_workers,
            progress=False,
        )
        train_ds.transform.set_random_state(seed=cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(
            train_ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
            generator=generator, drop_last=False,
        )  # fmt: skip
        val_ds = CacheDataset(
            [_case_item(c, with_label=True) for c in val_cases],
            transform=_loading_transforms(with_label=True),
            cache_rate=1.0,
            num_workers=cfg.num_workers,
            progress=False,
        )

        model = channels_last(_build_network(topology, cfg.filters, cfg.deep_supervision_heads).to(prec.device),
                              cfg.channels_last)
        optimizer = _make_optimizer(model, cfg)
        loss_fn = DeepSupervisionLoss(
            # As nnU-Net's 3d configurations: batch Dice (a patch without lesion does not pull
            # the necrosis term to 0 or 1 on its own) without the background class.
            DiceCELoss(
                include_background=False,
                to_onehot_y=True,
                softmax=True,
                batch=True,
                weight=torch.tensor(cfg.class_weights, device=prec.device) if cfg.class_weights else None,
            ),
            weight_mode="exp",  # weights 1, 1/2, 1/4, ... from the full-resolution output down
        )
        scaler = prec.grad_scaler()
        seen_in_training: set[str] = set()
        seen_in_selection: set[str] = set()
        batches = endless(loader)

        def train_epoch(epoch: int) -> dict[str, float]:
            lr = cfg.learning_rate * (1 - epoch / cfg.epochs) ** cfg.lr_decay_power
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            losses = []
            for _ in range(cfg.iterations_per_epoch):
                batch = next(batches)
                seen_in_training.update(batch["case_id"])
                images = channels_last(batch["image"].to(prec.device), cfg.channels_last)
                labels = batch["label"].to(prec.device)
                optimizer.zero_grad(set_to_none=True)
                with prec.autocast():
                    outputs = model(images).float()  # the loss in float32, as nnU-Net's on a CPU
                    heads = list(torch.unbind(outputs, dim=1)) if cfg.deep_supervision_heads else [outputs]
                    loss = loss_fn(heads, labels)
                # nnU-Net clips at 12; it keeps early SGD steps with momentum 0.99 from diverging.
                optimizer_step(loss, optimizer, scaler, clip_grad_norm=12.0, parameters=model.parameters())
                losses.append(float(loss.detach()))
            return {"train_loss": float(np.mean(losses)), "learning_rate": lr}

        def validate(epoch: int) -> dict[str, float]:
            dice_vital, dice_necrosis, evaluated = _evaluate(model, val_ds, topology.patch_size, cfg, prec)
            seen_in_selection.update(evaluated)
            return {
                "val_dice_vital": dice_vital,
                "val_dice_necrosis": dice_necrosis,
                "val_dice_mean": (dice_vital + dice_necrosis) / 2,
            }

        result = train_epochs(
            model,
            epochs=cfg.epochs,
            train_epoch=train_epoch,
            validate=validate if len(val_ds) else None,
            score=lambda values: values["val_dice_mean"],
            validate_every=cfg.validate_every,
            checkpoint=model_dir / CHECKPOINT_FILE,
            log=self.log,
            restore_best=False,  # fit ends here; predict loads the checkpoint itself
        )
        plan = NetworkPlan(
            spacing_zyx=spacing,
            topology=topology,
            filters=cfg.filters,
            deep_supervision_heads=cfg.deep_supervision_heads,
            best_epoch=result.best_epoch,
            best_val_dice=result.best_score,
            selection="val_cases" if result.best_score is not None else "last_epoch",
        )
        (model_dir / PLAN_FILE).write_text(plan.model_dump_json(indent=2) + "\n")
        usage = DataUsage(
            train_cases=[c.case_id for c in train_cases],
            val_cases=[c.case_id for c in val_cases],
            training_batches=sorted(seen_in_training),
            selection=sorted(seen_in_selection),
        )
        (model_dir / DATA_USAGE_FILE).write_text(usage.model_dump_json(indent=2) + "\n")
        if self.log:
            self.log.param("dynunet_best_epoch", result.best_epoch)
            self.log.param("dynunet_selection", plan.selection)

    def predict(self, cases: Sequence[PredictCase], workdir: Path, device: str) -> Iterator[SegmentationPrediction]:
        """Gaussian-weighted sliding-window softmax on each image's own grid; labels = argmax."""
        model_dir = Path(workdir) / MODEL_SUBDIR
        plan_path, checkpoint = require_fitted(self.card.name, model_dir, PLAN_FILE, CHECKPOINT_FILE)
        plan = NetworkPlan.model_validate_json(plan_path.read_text())
        prec = precision(device, self.config.amp, self.config.cpu_bfloat16)
        model = load_state(_build_network(plan.topology, plan.filters, plan.deep_supervision_heads), checkpoint)
        model = channels_last(model.to(prec.device), self.config.channels_last).eval()
        load = _loading_transforms(with_label=False)
        for case in cases:
            # threads set per case, not across the yield: the caller's code keeps its own
            with cpu_threads(self.config.cpu_threads):
                image = load(_case_item(case, with_label=False))["image"]
                probabilities = _sliding_window_softmax(model, image, plan.topology.patch_size, self.config, prec)
            yield SegmentationPrediction(
                case_id=case.case_id,
                labels=probabilities.argmax(axis=0).astype(np.uint8),
                probabilities=probabilities,
            )


def _median_spacing(cases: Sequence[Case]) -> tuple[float, float, float]:
    """Median voxel spacing (z, y, x) in mm over the cases."""
    return tuple(float(statistics.median(c.spacing[a] for c in cases)) for a in range(3))  # type: ignore[return-value]


def _case_item(case: Case | PredictCase, with_label: bool) -> dict[str, Any]:
    """The case as MONAI's dictionary transforms see it: (1, z, y, x) arrays read by the core's
    image reader (the same arrays, axis order and values every other method gets)."""
    item: dict[str, Any] = {"case_id": case.case_id, "image": case.image_array()[None]}
    if with_label:
        if getattr(case, "label_path", None) is None:
            raise ConfigError(f"case {case.case_id} has no label map; dynunet cannot train on it")
        item["label"] = case.label_array()[None].astype(np.float32)
    return item


def _loading_transforms(with_label: bool):
    """(1, z, y, x) float32 tensors, the image z-scored over its nonzero voxels."""
    from monai.transforms import Compose, EnsureTyped, NormalizeIntensityd

    keys = ["image", "label"] if with_label else ["image"]
    return Compose(
        [
            EnsureTyped(keys, dtype=np.float32, track_meta=False),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        ]
    )


def _training_transforms(patch_size: Sequence[int], cfg: DynUNetConfig):
    """Loading (cached), then random balanced patches, flips and intensity augmentation."""
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    keys = ["image", "label"]
    return Compose(
        [
            *_loading_transforms(with_label=True).transforms,
            SpatialPadd(keys, spatial_size=list(patch_size)),
            RandCropByPosNegLabeld(
                keys, label_key="label", spatial_size=list(patch_size), pos=1.0, neg=1.0, num_samples=1
            ),
            RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=0),
            RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=1),
            RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=2),
            RandScaleIntensityd("image", factors=0.1, prob=cfg.intensity_aug_prob),
            RandShiftIntensityd("image", offsets=0.1, prob=cfg.intensity_aug_prob),
            RandGaussianNoised("image", std=0.05, prob=cfg.intensity_aug_prob),
        ]
    )


def _build_network(topology: Topology, filters: Sequence[int] | None, deep_supervision_heads: int):
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=N_CLASSES,
        kernel_size=[list(k) for k in topology.kernel_sizes],
        strides=[list(s) for s in topology.strides],
        upsample_kernel_size=[list(s) for s in topology.strides[1:]],
        filters=list(filters) if filters is not None else None,
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=deep_supervision_heads > 0,
        deep_supr_num=max(deep_supervision_heads, 1),
        res_block=False,
    )


def _make_optimizer(model, cfg: DynUNetConfig):
    import torch

    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.learning_rate, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _sliding_window_softmax(model, image, patch_size: Sequence[int], cfg: DynUNetConfig, prec: Precision) -> np.ndarray:
    """Softmax probabilities (3, z, y, x) float32 of one (1, z, y, x) image tensor."""
    import torch
    from monai.inferers import sliding_window_inference

    with torch.no_grad(), prec.autocast():
        logits = sliding_window_inference(
            image[None].to(prec.device),
            roi_size=list(patch_size),
            sw_batch_size=cfg.sw_batch_size,
            predictor=lambda windows: model(channels_last(windows, cfg.channels_last)),
            overlap=cfg.sw_overlap,
            mode="gaussian",
        )
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy().astype(np.float32)


def _evaluate(model, val_ds, patch_size: Sequence[int], cfg: DynUNetConfig, prec: Precision) -> tuple[float, float, list[str]]:
    """Mean Dice of vital and necrosis over the validation cases, and the ids evaluated.

    A label absent from both reference and prediction counts as Dice 1 (nothing to find,
    nothing found), so a model is not rewarded for false positives on lesion-free hips.
    """
    import torch
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    model.eval()
    scores, evaluated = [], []
    for item in val_ds:
        probabilities = _sliding_window_softmax(model, item["image"], patch_size, cfg, prec)
        predicted = torch.from_numpy(probabilities.argmax(axis=0))[None, None]
        reference = item["label"][None].long()
        dice = compute_dice(
            one_hot(predicted, N_CLASSES), one_hot(reference, N_CLASSES), include_background=False, ignore_empty=False
        )
        scores.append(dice[0].numpy())
        evaluated.append(item["case_id"])
    model.train()
    mean = np.mean(scores, axis=0)
    return float(mean[0]), float(mean[1]), evaluated
