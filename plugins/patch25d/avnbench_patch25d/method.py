"""``patch25d-cnn``: seed 003's triplanar 2.5D patch CNN, three classes, dense inference.

torch is imported inside functions (and in :mod:`avnbench_patch25d.network`, which is imported
only there) so that ``avnbench methods`` stays fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from avnbench.api import Case, ConfigError, Method, MethodCard, PredictCase, SegmentationPrediction
from avnbench_patch25d.sampling import SampledCase, available_fractions, draw_batch
from avnbench.training import (
    TorchMethodConfig,
    cpu_threads,
    channels_last,
    load_state,
    optimizer_step,
    precision,
    require_fitted,
    seed_everything,
    train_epochs,
)

MODEL_FILE = "model.pt"
ARCHITECTURE_FILE = "model.json"
POSTPROCESS_FILE = "postprocess.json"


class Patch25dConfig(TorchMethodConfig):
    """Hyper-parameters of ``patch25d-cnn``; the defaults are the ``quick`` preset."""

    PRESETS = {
        "smoke": {
            "channels": (8, 16, 16),
            "hidden_units": 32,
            "epochs": 2,
            "iterations_per_epoch": 40,
            "batch_size": 64,
            "val_patches": 600,
        },
        "quick": {},
        "paper": {
            "channels": (32, 64, 64),
            "hidden_units": 256,
            "conv_dropout": 0.5,
            "fc_dropout": 0.5,
            "epochs": 62,
            "iterations_per_epoch": 2000,
            "batch_size": 256,
            "learning_rate": 1e-4,
            "momentum": 0.9,
            "cosine_decay": False,
            "roc_margin_mm": None,
            "val_patches": 20_000,
            "cpu_threads": None,
        },
    }

    channels: tuple[int, int, int] = Field(
        default=(8, 16, 16), description="output channels of the three 3×3 convolutions (per plane)"
    )
    hidden_units: int = Field(default=32, gt=0, description="units of the first fully connected layer")
    conv_dropout: float = Field(
        default=0.1, ge=0, lt=1, description="dropout rate after each plane's last convolution"
    )
    fc_dropout: float = Field(default=0.5, ge=0, lt=1, description="dropout rate after the first FC layer")
    bias_init: float = Field(default=0.1, description="initial value of every bias (study: 0.1)")
    # On by default: a quick training step (256 triplets) took 0.085 / 0.098 s instead of
    # 0.095 / 0.105 s on one CPU thread (benchmarks/bench_patch_shapes.py --channels-last
    # patch25d:256, twice); five folds gave the same Dice (vital 0.793, necrosis 0.527 against
    # 0.524). Not measured on a GPU.
    channels_last: bool = Field(
        default=True,
        description="train in channels-last (NHWC) memory order: the same network, faster "
        "convolutions on a CPU; float sums in another order",
    )
    epochs: int = Field(default=5, gt=0, description="training epochs")
    iterations_per_epoch: int = Field(default=60, gt=0, description="SGD steps per epoch")
    batch_size: int = Field(default=256, gt=0, description="voxels (patch triplets) per SGD step")
    learning_rate: float = Field(default=0.05, gt=0, description="SGD learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    cosine_decay: bool = Field(
        default=True,
        description="anneal the learning rate to 0 along a cosine over training (the study: constant)",
    )
    weight_decay: float = Field(
        default=5e-4, ge=0, description="L2 regularisation of kernel weights (not biases)"
    )
    class_fractions: tuple[float, float, float] = Field(
        default=(0.5, 0.25, 0.25),
        description="share of background, vital and necrosis voxels in every batch "
        "(class-balanced sampling; background gets more for its variety)",
    )
    hard_negative_fraction: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="share of the background samples drawn within hard_negative_margin_mm of the head",
    )
    hard_negative_margin_mm: float = Field(
        default=15.0, gt=0, description="distance from the head (mm) of the hard-negative band"
    )
    class_weighted_loss: bool = Field(
        default=True,
        description="weight the cross-entropy by the inverse sampling share of each class, so "
        "every class counts equally whatever class_fractions is",
    )
    val_patches: int = Field(
        default=3000, ge=0, description="class-balanced validation voxels for picking the best epoch"
    )
    roc_margin_mm: float | None = Field(
        default=10.0,
        gt=0,
        description="the ROC for the head cut-off uses the validation voxels within this distance "
        "(mm) of the reference head; None = every voxel of the volume, as in the study",
    )
    min_cluster_fraction: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="post-processing removes head clusters smaller than this fraction of the "
        "smallest femoral head among the training labels",
    )
    min_necrosis_cluster_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="necrosis clusters smaller than this fraction of the smallest necrotic lesion "
        "among the training labels become vital",
    )
    tune_necrosis_cutoff: bool = Field(
        default=True,
        description="choose the cut-off on P(necrosis | head) that maximises the pooled necrosis "
        "Dice on the inner validation cases (grid 0.05-0.95); False: the argmax (0.5)",
    )
    opening_iterations: int = Field(
        default=1, ge=0, description="binary opening iterations (6-neighbour structure)"
    )
    inference_plane_batch: int = Field(
        default=32, gt=0, description="planes evaluated at once in dense inference (memory bound)"
    )

    @field_validator("class_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or sum(v) <= 0:
            raise ValueError("class_fractions must be non-negative and not all zero")
        return tuple(f / sum(v) for f in v)  # type: ignore[return-value]


class Patch25dCNN(Method):
    """Seed 003's 7-layer triplanar patch CNN with exact dense (fully convolutional) inference."""

    card = MethodCard(
        name="patch25d-cnn",
        task="segmentation",
        description=(
            "7-layer CNN classifying every voxel from its axial, coronal and sagittal 32×32 "
            "patches (2.5D, one 2-D tower per plane, fused at the fully connected layers); "
            "3 classes with class-balanced sampling and loss; whole volumes predicted by exact "
            "dense 'à trous' evaluation; ROC (Youden) cut-off for head vs background on the "
            "inner validation cases; cluster removal, hole filling and opening."
        ),
        citation=(
            "Hallyburton S, Chang G, Honig S, Cho K, Deniz CM. Automatic Segmentation of MR "
            "Images of the Proximal Femur Using Deep Learning. Proc. Intl. Soc. Mag. Reson. "
            "Med. 25 (ISMRM 2017), abstract 3860."
        ),
        reference="https://submissions.mirasmart.com/ISMRM2017/ViewSubmission.aspx?sbmID=3860",
    )
    Config = Patch25dConfig

    # ----------------------------------------------------------------------------------------
    def fit(
        self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str
    ) -> None:
        """Train the network on class-balanced voxel samples, pick the best epoch on
        ``val_cases``, then choose the head cut-off by ROC on ``val_cases``."""
        with cpu_threads(self.config.cpu_threads):
            self._fit(train_cases, val_cases, Path(workdir), device)

    def _fit(self, train_cases, val_cases, workdir: Path, device: str) -> None:
        import torch

        from avnbench_patch25d import network as net
        from avnbench_patch25d.postprocess import (
            FALLBACK_CUTOFF,
            necrosis_cutoff_by_dice,
            plot_roc,
            postprocess_head,
            smallest_volume_mm3,
            youden_cutoff,
        )

        cfg: Patch25dConfig = self.config  # type: ignore[assignment]
        if not train_cases:
            raise ConfigError("patch25d-cnn needs at least one training case")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        prec = precision(device, cfg.amp)
        torch_device = prec.device
        seed_everything(cfg.seed)
        rng = np.random.default_rng(cfg.seed)

        train = [SampledCase.load(c, cfg, torch_device) for c in train_cases]
        val = [SampledCase.load(c, cfg, torch_device) for c in val_cases]
        fractions = available_fractions(cfg.class_fractions, train)
        loss_weights = torch.tensor(
            [1.0 / f if f > 0 else 0.0 for f in fractions], dtype=torch.float32, device=torch_device
        )
        loss_weights = loss_weights / loss_weights[loss_weights > 0].mean()
        if not cfg.class_weighted_loss:
            loss_weights = (loss_weights > 0).float()
        val_fractions = available_fractions((1 / 3, 1 / 3, 1 / 3), val) if val else None
        val_batch = (
            draw_batch(val, val_fractions, cfg.val_patches, cfg, rng, torch_device)
            if val and cfg.val_patches
            else None
        )

        model = net.TriplanarPatchCNN(
            cfg.channels, cfg.hidden_units, cfg.conv_dropout, cfg.fc_dropout, cfg.bias_init
        ).to(torch_device)
        model = channels_last(model, cfg.channels_last)
        kernels = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if not n.endswith("weight")]
        optimiser = torch.optim.SGD(
            [{"params": kernels, "weight_decay": cfg.weight_decay}, {"params": biases, "weight_decay": 0.0}],
            lr=cfg.learning_rate,
            momentum=cfg.momentum,
        )
        scaler = prec.grad_scaler()
        criterion = torch.nn.CrossEntropyLoss(weight=loss_weights)
        total_steps = cfg.epochs * cfg.iterations_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser,
            lambda step: 0.5 * (1 + np.cos(np.pi * step / total_steps)) if cfg.cosine_decay else 1.0,
        )

        def train_epoch(epoch: int) -> dict[str, float]:
            model.train()
            losses = []
            for _ in range(cfg.iterations_per_epoch):
                patches, targets = draw_batch(train, fractions, cfg.batch_size, cfg, rng, torch_device)
                optimiser.zero_grad(set_to_none=True)
                with prec.autocast():
                    loss = criterion(model(channels_last(patches, cfg.channels_last)).float(), targets)
                optimizer_step(loss, optimiser, scaler)
                schedule.step()
                losses.append(float(loss.detach()))
            return {"train_loss": float(np.mean(losses))}

        started = time.perf_counter()
        result = train_epochs(
            model,
            epochs=cfg.epochs,
            train_epoch=train_epoch,
            validate=(lambda epoch: {"val_loss": _evaluate_loss(model, val_batch, criterion)})
            if val_batch is not None
            else None,
            score=lambda values: -values["val_loss"],
            checkpoint=workdir / MODEL_FILE,
            log=self.log,
        )
        best_epoch = result.best_epoch
        (workdir / ARCHITECTURE_FILE).write_text(
            json.dumps({"channels": list(cfg.channels), "hidden_units": cfg.hidden_units})
        )
        use_amp = prec.amp

        # The study's cut-off: ROC of P(head) against the reference head on held-out cases.
        spacings = [c.spacing for c in train]
        min_cluster_mm3 = cfg.min_cluster_fraction * smallest_volume_mm3(
            [c.labels > 0 for c in train], spacings
        )
        min_necrosis_mm3 = cfg.min_necrosis_cluster_fraction * smallest_volume_mm3(
            [c.labels == 2 for c in train], spacings
        )
        roc, val_probabilities = None, []
        if val:
            truth, scores = [], []
            for c in val:
                probabilities = _dense_probabilities(model, c.padded, cfg, use_amp).numpy()
                val_probabilities.append(probabilities)
                region = _roc_region(c, cfg.roc_margin_mm)
                truth.append((c.labels > 0)[region])
                scores.append((probabilities[1] + probabilities[2])[region])
            roc = youden_cutoff(np.concatenate(truth), np.concatenate(scores))
        cutoff = roc.cutoff if roc else FALLBACK_CUTOFF
        # Class-balanced training gives necrosis an equal prior, so the plain argmax over-calls it
        # (the lesion is ~10-30 % of a head): its cut-off is tuned on the same held-out cases.
        necrosis_cutoff, necrosis_dice = 0.5, None
        if val and cfg.tune_necrosis_cutoff and any((c.labels == 2).any() for c in val):
            heads = [
                postprocess_head(p[1] + p[2], cutoff, c.spacing, min_cluster_mm3, cfg.opening_iterations)
                for p, c in zip(val_probabilities, val)
            ]
            necrosis_cutoff, necrosis_dice = necrosis_cutoff_by_dice(
                heads, val_probabilities, [c.labels == 2 for c in val], [c.spacing for c in val],
                min_necrosis_mm3,
            )
        post = {
            "head_cutoff": cutoff,
            "cutoff_source": "roc_youden_val_cases" if roc else "fallback_0.5_no_roc",
            "roc_margin_mm": cfg.roc_margin_mm,
            "min_cluster_mm3": min_cluster_mm3,
            "min_necrosis_cluster_mm3": min_necrosis_mm3,
            "necrosis_cutoff": necrosis_cutoff,
            "opening_iterations": cfg.opening_iterations,
        }
        (workdir / POSTPROCESS_FILE).write_text(json.dumps(post, indent=2))
        if self.log:
            self.log.param("head_cutoff", round(cutoff, 6))
            self.log.param("cutoff_source", post["cutoff_source"])
            self.log.param("min_cluster_mm3", round(min_cluster_mm3, 3))
            self.log.param("min_necrosis_cluster_mm3", round(min_necrosis_mm3, 3))
            self.log.param("necrosis_cutoff", necrosis_cutoff)
            self.log.param("best_epoch", best_epoch)
            self.log.metric("train_seconds", time.perf_counter() - started, step=0)
            if roc:
                self.log.metric("val_roc_auc_head", roc.auc, step=0)
                self.log.metric("val_roc_sensitivity_head", roc.sensitivity, step=0)
                self.log.metric("val_roc_specificity_head", roc.specificity, step=0)
                plot_roc(roc, self.log.artifact("roc_head.png"), "femoral head vs background (val)")
            if necrosis_dice is not None:
                self.log.metric("val_dice_necrosis_at_cutoff", necrosis_dice, step=0)

    # ----------------------------------------------------------------------------------------
    def predict(
        self, cases: Sequence[PredictCase], workdir: Path, device: str
    ) -> Iterator[SegmentationPrediction]:
        """Dense probabilities of every voxel, then the fitted cut-off and post-processing."""
        for case in cases:
            # threads set per case, not across the yield: the caller's code keeps its own
            with cpu_threads(self.config.cpu_threads):
                prediction = self._predict_one(case, Path(workdir), device)
            yield prediction

    def _predict_one(self, case: PredictCase, workdir: Path, device: str) -> SegmentationPrediction:
        from avnbench_patch25d import network as net
        from avnbench_patch25d.postprocess import label_map

        cfg: Patch25dConfig = self.config  # type: ignore[assignment]
        model, post = self._load(workdir, device)
        use_amp = precision(device, cfg.amp).amp
        padded = net.pad_volume(net.normalise_image(case.image_array())).to(device)
        probabilities = _dense_probabilities(model, padded, cfg, use_amp).numpy()
        labels = label_map(
            probabilities,
            post["head_cutoff"],
            case.spacing,
            post["min_cluster_mm3"],
            post["opening_iterations"],
            post["min_necrosis_cluster_mm3"],
            post["necrosis_cutoff"],
        )
        return SegmentationPrediction(case_id=case.case_id, labels=labels, probabilities=probabilities)

    def _load(self, workdir: Path, device: str):
        """The fitted network and post-processing settings, read once per instance."""
        from avnbench_patch25d import network as net

        key = (str(workdir), device)
        if getattr(self, "_loaded_key", None) == key:
            return self._loaded
        files = require_fitted(self.card.name, workdir, MODEL_FILE, ARCHITECTURE_FILE, POSTPROCESS_FILE)
        architecture = json.loads(files[1].read_text())
        post = json.loads(files[2].read_text())
        model = net.TriplanarPatchCNN(architecture["channels"], architecture["hidden_units"])
        load_state(model, files[0], device)
        model.to(device).eval()
        self._loaded_key, self._loaded = key, (model, post)
        return model, post


def _evaluate_loss(model, batch, criterion, chunk: int = 2048) -> float:
    import torch

    patches, targets = batch
    model.eval()
    total = 0.0
    with torch.no_grad():
        logits = torch.cat([model(patches[i : i + chunk]).float() for i in range(0, len(patches), chunk)])
        total = float(criterion(logits, targets))
    model.train()
    return total


def _dense_probabilities(model, padded, cfg: Patch25dConfig, use_amp: bool):
    from avnbench_patch25d import network as net

    return net.predict_dense(model, padded, plane_batch=cfg.inference_plane_batch, amp=use_amp)


def _roc_region(case: SampledCase, margin_mm: float | None) -> np.ndarray:
    """Voxels that enter the ROC: within ``margin_mm`` of the reference head, or all.

    Over the whole volume the many trivially negative voxels far from the head make every false
    positive cheap in specificity, so Youden's cut-off (and with it the head's size) depends on
    the field of view; a band around the head does not.
    """
    head = case.labels > 0
    if margin_mm is None or not head.any():
        return np.ones(head.shape, dtype=bool)
    from scipy import ndimage

    return ndimage.distance_transform_edt(~head, sampling=case.spacing) <= margin_mm
